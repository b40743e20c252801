"""Stage 1: train the project's own small AutoencoderKL when no pretrained VAE is named.

It learns from the union of both domains' training images (L1 reconstruction plus a small KL
term), then sets ``scaling_factor``/``shift_factor`` from the data so latents are roughly
unit-variance, and is saved with ``save_pretrained`` into the cache, keyed by data and recipe.
Training resumes from its last step when interrupted.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.optimization import get_cosine_schedule_with_warmup
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from translate.atomic import atomic_dir
from translate.codec import LatentCodec
from translate.config import OwnVAEConfig
from translate.images import load_rgb, resize_center_crop, to_tensor
from translate.latent_cache import EncodeSpec, cache_key, encode_files

STATE_DIR = ".stage1-state"


@dataclass(frozen=True)
class AutoencoderReport:
    """What stage 1 produced."""

    path: Path  # the save_pretrained folder
    test_psnr: float  # dB, on the test split of both domains
    steps: int


def build_autoencoder(cfg: OwnVAEConfig, resolution: int) -> AutoencoderKL:
    """A fresh AutoencoderKL with one down/up level per ``block_out_channels`` entry."""
    levels = len(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups,
        sample_size=resolution,
    )


def autoencoder_dir(
    cache_dir: Path,
    cfg: OwnVAEConfig,
    train_files: list[Path],
    resolution: int,
    crop: int | None,
    bf16: bool = False,
) -> Path:
    """Where the VAE for this recipe and data lives: ``cache_dir/vae/<hash>``.

    ``bf16`` is the resolved ``cfg.mixed_precision`` (``translate.precision.stage1_bf16``) and
    takes the setting's place in the key: ``auto`` and ``bf16`` share a VAE where both mean bf16,
    and a float32 recipe keeps the folder it had before the setting existed.
    """
    files_key = cache_key(_NoCodec(), train_files, EncodeSpec(resolution, crop))
    settings = {k: v for k, v in asdict(cfg).items() if k != "mixed_precision"}
    if not settings.get("frequency_weight"):  # L1 only: the folder it had before the setting
        settings.pop("frequency_weight", None)
    recipe = {"cfg": settings, "files": files_key} | ({"bf16": True} if bf16 else {})
    recipe = json.dumps(recipe, sort_keys=True)
    return Path(cache_dir) / "vae" / hashlib.sha256(recipe.encode()).hexdigest()[:16]


class _NoCodec:
    """Stands in for a codec in ``cache_key`` when only the data identity matters."""

    def identity(self) -> str:
        return "none"


def _load_pixels(files: list[Path], resolution: int, crop: int | None, desc: str) -> torch.Tensor:
    """All images as uint8 (N, 3, H, W); unreadable files are skipped."""
    kept = []
    for path in tqdm(files, desc=desc, unit="img"):
        try:
            image = resize_center_crop(load_rgb(path), resolution, crop)
        except Exception:
            continue
        kept.append(to_tensor([image])[0].add(1).mul(127.5).round().to(torch.uint8))
    return torch.stack(kept)


def _as_float(batch: torch.Tensor) -> torch.Tensor:
    return batch.float().div(127.5).sub(1.0)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of pixels in [-1, 1], shape (batch, ...) -> (batch,)."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(4.0 / mse)  # peak-to-peak range is 2


def stage1_loss(
    vae: AutoencoderKL,
    x: torch.Tensor,
    kl_weight: float,
    bf16: bool = False,
    frequency_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage 1's objective on images x (batch, 3, H, W) in [-1, 1]: (loss, L1, reconstruction).

    loss = |decode(z) - x|_1 + kl_weight * KL(q(z|x) || N(0, I)), with z a posterior sample
    (the VAE objective of Kingma & Welling, ICLR 2014, with an L1 reconstruction term), plus
    ``frequency_weight`` times the focal frequency loss of decode(z) against x (Jiang et al.,
    ICCV 2021, Sec. 3.2: the squared distance of the two orthonormal 2-D DFTs, each frequency
    weighted by its own error over the largest one; the ``focal-frequency-loss`` package).
    ``bf16``: encode and decode under bf16 autocast; the loss is taken in float32.
    """
    with torch.autocast(x.device.type, torch.bfloat16, enabled=bf16):
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=None)).sample.float()
    l1 = F.l1_loss(recon, x)
    loss = l1 + kl_weight * posterior.kl().float().mean()
    if frequency_weight:
        from focal_frequency_loss import FocalFrequencyLoss  # only where the term is used

        loss = loss + frequency_weight * FocalFrequencyLoss()(recon, x)
    return loss, l1, recon


def train_autoencoder(
    cfg: OwnVAEConfig,
    train_files: list[Path],
    test_files: list[Path],
    out_dir: Path,
    resolution: int,
    crop: int | None = None,
    flip: bool = False,
    device: str | torch.device = "cpu",
    bf16: bool = False,
) -> AutoencoderReport:
    """Train (or resume, or reuse) the VAE and return where it was saved.

    ``bf16``: the forward passes run under bf16 autocast (weights, optimizer and loss stay
    float32), as the flow does on CPUs with native bf16 arithmetic.
    """
    out_dir = Path(out_dir)
    if (out_dir / "metrics.json").is_file():
        metrics = json.loads((out_dir / "metrics.json").read_text())
        return AutoencoderReport(out_dir, metrics["test_psnr"], metrics["steps"])
    state_dir = out_dir.with_name(out_dir.name + STATE_DIR)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    vae = build_autoencoder(cfg, resolution).to(device)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.steps)
    step = _resume(state_dir, vae, optimizer, scheduler, generator)

    pixels = _load_pixels(train_files, resolution, crop, "VAE: loading training images")
    bar = tqdm(total=cfg.steps, initial=step, desc="VAE: training (stage 1)", unit="step")
    vae.train()
    while step < cfg.steps:
        index = torch.randint(len(pixels), (cfg.batch_size,), generator=generator)
        x = _as_float(pixels[index]).to(device)
        if flip:
            mirror = torch.rand(len(x), generator=generator) < 0.5
            x[mirror] = x[mirror].flip(-1)
        loss, l1, recon = stage1_loss(vae, x, cfg.kl_weight, bf16, cfg.frequency_weight)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"stage 1 VAE loss is {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        step += 1
        bar.update(1)
        bar.set_postfix(l1=f"{l1.item():.4f}", psnr=f"{psnr(recon.detach(), x).mean():.1f}")
        if step % cfg.checkpoint_every == 0 and step < cfg.steps:
            _save_state(state_dir, vae, optimizer, scheduler, generator, step)
    bar.close()
    vae.eval()
    codec = _normalised_codec(vae, pixels, cfg.batch_size)
    test_psnr = evaluate_psnr(codec, test_files, resolution, crop)
    with atomic_dir(out_dir, unique=True) as tmp:
        codec.save_pretrained(tmp)
        metrics = {"test_psnr": test_psnr, "steps": step}
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    shutil.rmtree(state_dir, ignore_errors=True)
    return AutoencoderReport(out_dir, test_psnr, step)


@torch.no_grad()
def _normalised_codec(vae: AutoencoderKL, pixels: torch.Tensor, batch_size: int) -> LatentCodec:
    """Set shift/scale so the training latents have zero mean and unit variance."""
    sample = pixels[torch.linspace(0, len(pixels) - 1, min(len(pixels), 2048)).long()]
    device = next(vae.parameters()).device
    means = torch.cat(
        [
            vae.encode(_as_float(chunk).to(device)).latent_dist.mean.cpu()
            for chunk in sample.split(batch_size)
        ]
    )
    vae.register_to_config(
        shift_factor=means.mean().item(), scaling_factor=1.0 / means.std().item()
    )
    return LatentCodec(vae, "stage1")


def evaluate_psnr(
    codec: LatentCodec, files: list[Path], resolution: int, crop: int | None, batch_size: int = 64
) -> float:
    """Mean reconstruction PSNR (dB) of ``files`` through encode -> decode."""
    encoded = encode_files(
        codec, files, EncodeSpec(resolution, crop), batch_size, desc="VAE: test reconstruction"
    )
    pixels = _load_pixels(files, resolution, crop, "VAE test images")
    decoded = torch.cat([codec.decode(z) for z in encoded.latents.split(batch_size)])
    if len(decoded) != len(pixels):
        return math.nan
    return psnr(decoded, _as_float(pixels)).mean().item()


def _save_state(state_dir: Path, vae, optimizer, scheduler, generator, step: int) -> None:
    """Resume point: weights as safetensors, optimizer via torch.save (loaded weights_only)."""
    with atomic_dir(state_dir) as tmp:
        weights = {k: v.contiguous() for k, v in vae.state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        save_file({"generator": generator.get_state()}, str(tmp / "rng.safetensors"))
        state = {"step": step, "scheduler": scheduler.state_dict()}
        (tmp / "state.json").write_text(json.dumps(state))


def _resume(state_dir: Path, vae, optimizer, scheduler, generator) -> int:
    if not (state_dir / "state.json").is_file():
        return 0
    vae.load_state_dict(load_file(str(state_dir / "model.safetensors")))
    optimizer.load_state_dict(torch.load(state_dir / "optimizer.pt", weights_only=True))
    generator.set_state(load_file(str(state_dir / "rng.safetensors"))["generator"])
    state = json.loads((state_dir / "state.json").read_text())
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"])
