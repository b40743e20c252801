"""From a config to training tensors: image source -> VAE (pretrained or stage 1) -> latents."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from translate.autoencoder import autoencoder_dir, train_autoencoder
from translate.codec import LatentCodec
from translate.config import Config, check_resolution
from translate.data import ImageSource, open_source
from translate.latent_cache import EncodeSpec, LatentSet, cached_colours, cached_latents
from translate.precision import stage1_bf16


@dataclass(frozen=True)
class PreparedData:
    """Everything the flow trainer reads: the codec and encoded latents of both domains.

    The train latents are float16 memory maps of the cache files; the test latents are float32
    in memory.
    """

    source: ImageSource
    codec: LatentCodec
    train_a: LatentSet
    train_b: LatentSet
    test_a: LatentSet
    test_b: LatentSet
    vae_test_psnr: float | None  # stage 1 only
    # (A, B) colour histograms of the train latents' images, row for row (flow.colour_weight > 0)
    train_colours: tuple[torch.Tensor, torch.Tensor] | None = None


def prepare_codec(
    cfg: Config, source: ImageSource, device: torch.device
) -> tuple[LatentCodec, float | None]:
    """The pretrained VAE the config names, or the project's own (trained once, then cached)."""
    if cfg.vae.pretrained:
        return LatentCodec.from_pretrained(cfg.vae.pretrained, cfg.vae.subfolder, device), None
    train_a, train_b = source.split("train")
    test_a, test_b = source.split("test")
    bf16 = stage1_bf16(cfg.vae.own.mixed_precision, device)
    out = autoencoder_dir(
        Path(cfg.data.cache_dir),
        cfg.vae.own,
        train_a + train_b,
        cfg.data.resolution,
        source.crop,
        bf16,
    )
    report = train_autoencoder(
        cfg.vae.own,
        train_a + train_b,
        test_a + test_b,
        out,
        cfg.data.resolution,
        source.crop,
        cfg.data.flip,
        device,
        bf16,
    )
    return LatentCodec.from_pretrained(report.path, device=device), report.test_psnr


def _encode_spec(cfg: Config, source: ImageSource, split: str) -> EncodeSpec:
    """How ``split``'s images become latents (flipped copies for training only); the colour
    cache keys on the latent cache of the same spec."""
    return EncodeSpec(
        cfg.data.resolution,
        source.crop,
        flip=cfg.data.flip and split == "train",
        sample_posterior=cfg.vae.sample_posterior,
    )


def prepare_data(cfg: Config, device: torch.device) -> PreparedData:
    """Build or reuse every cached artefact a run needs, in order."""
    source = open_source(cfg.data)
    codec, psnr = prepare_codec(cfg, source, device)
    check_resolution(cfg, codec.downsample_factor)  # before anything is encoded
    sets = {}
    for split in ("train", "test"):
        for domain, files in zip("AB", source.split(split), strict=True):
            sets[f"{split}_{domain.lower()}"] = cached_latents(
                cfg.data.cache_dir,
                codec,
                files,
                _encode_spec(cfg, source, split),
                cfg.vae.encode_batch_size,
                cfg.data.num_workers,
                desc=f"latents: encoding {split}{domain}",
                mmap=split == "train",  # the trainer decides where they live
            )
    colours = None
    if cfg.flow.colour_weight > 0:  # row for row with the train latents, flips included
        colours = tuple(
            cached_colours(
                cfg.data.cache_dir,
                codec,
                files,
                _encode_spec(cfg, source, "train"),
                sets[f"train_{domain.lower()}"].names,
                cfg.flow.colour_bins,
                cfg.data.num_workers,
                desc=f"colours: train{domain}",
            )
            for domain, files in zip("AB", source.split("train"), strict=True)
        )
    return PreparedData(source, codec, vae_test_psnr=psnr, train_colours=colours, **sets)
