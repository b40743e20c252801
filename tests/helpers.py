"""Tiny models and data sets the tests build for themselves (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from diffusers import AutoencoderKL
from PIL import Image, ImageDraw


def save_tiny_vae(path: Path, latent_channels: int = 4, seed: int = 0) -> Path:
    """A random two-level AutoencoderKL (downsampling by 2), saved with save_pretrained."""
    import torch

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=16,
    )
    vae.save_pretrained(str(path))
    return path


def draw_shape(kind: str, size: int, rng: np.random.Generator, mode: str = "RGB") -> Image.Image:
    """A coloured circle (kind 'A') or square (kind 'B') on white."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    r = int(rng.integers(size // 4, size // 2))
    cx, cy = (int(v) for v in rng.integers(r, size - r + 1, 2))
    color = tuple(int(v) for v in rng.integers(0, 200, 3))
    box = (cx - r, cy - r, cx + r, cy + r)
    (draw.ellipse if kind == "A" else draw.rectangle)(box, fill=color)
    return image.convert(mode) if mode != "RGB" else image


def make_folders(
    root: Path, n_train: int = 12, n_test: int = 4, size: int = 20, seed: int = 0
) -> Path:
    """A CycleGAN-layout folder: circles in A, squares in B; test pairs share names."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for domain in "AB":
            folder = root / f"{split}{domain}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                draw_shape(domain, size, rng).save(folder / f"{i:03d}.png")
    return root


def tiny_translator(
    vae_path: Path,
    domain_a: str = "A",
    domain_b: str = "B",
    source_noise: float | None = None,
    guidance: float | None = None,
):
    """A Translator with a random two-level UNet over the tiny VAE, at 16 px, on the CPU;
    source-conditioned, with that noise, when ``source_noise`` is given; with a second random
    UNet as its autoguidance guide, at that A -> B weight, when ``guidance`` is given."""
    import torch

    from translate import Translator
    from translate.codec import LatentCodec
    from translate.config import ModelConfig
    from translate.model import build_unet
    from translate.pipeline import TranslatorInfo

    torch.manual_seed(0)
    model = ModelConfig(
        block_out_channels=[16, 32],
        attention=[False, True],
        layers_per_block=1,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    conditioned = source_noise is not None
    info = TranslatorInfo(
        domain_a=domain_a,
        domain_b=domain_b,
        resolution=16,
        source_condition=conditioned,
        source_noise=source_noise or 0.0,
        guidance={} if guidance is None else {"a2b": guidance, "b2a": 1.0},
    )
    unet = build_unet(model, 8, 4, conditioned)
    guide = None if guidance is None else build_unet(model, 8, 4, conditioned)
    codec = LatentCodec.from_pretrained(vae_path)
    return Translator(unet, codec, info, "cpu", guide=guide)


def torchrun(*args, cwd: Path, timeout: int = 300):
    """Run ``args`` under torchrun with two local processes (a gloo group on CPUs)."""
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        *map(str, args),
    ]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
