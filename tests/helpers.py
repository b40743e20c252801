"""Tiny models and data sets the tests build for themselves (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image, ImageDraw

from translate.skin_tone import SKIN_TONES


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


# two emoji sets' five skin colours (RGB), drawn apart like OpenMoji's and Twemoji's
PALETTE_A = [(250, 220, 188), (222, 187, 144), (193, 154, 101), (165, 121, 57), (106, 70, 47)]
PALETTE_B = [(247, 222, 206), (243, 210, 162), (213, 171, 136), (175, 126, 87), (124, 83, 62)]
CLOTHES = [(40, 90, 200), (200, 40, 40), (60, 160, 60), (250, 200, 40)]


def _rgb255_to_unit(colour) -> torch.Tensor:
    return torch.tensor(colour, dtype=torch.float32).view(3, 1, 1) / 127.5 - 1


def toned_figure(face, clothes, outline=True, shift=0, hair=None, size=32) -> torch.Tensor:
    """A ``size`` px figure on white (drawn on a 32 px grid, scaled): a black-outlined square
    face of colour ``face`` above a shirt, with a strip of ``hair`` (at 32 px larger than the
    face) when given."""
    k = size // 32 if size >= 32 else None

    def at(v: int) -> int:  # a 32 px grid coordinate at this size
        return v * k if k else v * size // 32

    image = torch.ones(3, size, size)
    if hair is not None:
        image[:, :, 0 : at(5)] = _rgb255_to_unit(hair)
    top = 4 + shift
    if outline:
        image[:, at(top - 1) : at(top + 13), at(9) : at(23)] = -1
    image[:, at(top) : at(top + 12), at(10) : at(22)] = _rgb255_to_unit(face)
    image[:, at(20) : at(30), at(6) : at(26)] = _rgb255_to_unit(clothes)
    return image


def toned_emoji_set(palette, shift=0, size=32):
    """Four figures (1f466..1f469) in each of the five tones: (images, names)."""
    images, names = [], []
    for base in range(4):
        for tone, modifier in enumerate(SKIN_TONES):
            # the darkest tone's figures have near-black hair, a colour of that tone alone
            hair = (11, 2, 0) if tone == 4 else None
            figure = toned_figure(palette[tone], CLOTHES[base], shift=shift, hair=hair, size=size)
            images.append(figure)
            names.append(f"1f46{6 + base}-{modifier}")
    return torch.stack(images), names
