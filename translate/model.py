"""The vector field: a diffusers UNet2DModel and the one adapter that feeds it time."""

from __future__ import annotations

import torch
from diffusers import UNet2DModel

from translate.config import ModelConfig
from translate.flow import network_time


def build_unet(cfg: ModelConfig, sample_size: int, channels: int) -> UNet2DModel:
    """A UNet2DModel for latents of shape (channels, sample_size, sample_size)."""
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention))
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(cfg.block_out_channels),
        down_block_types=down,
        up_block_types=up,
        layers_per_block=cfg.layers_per_block,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups,
        dropout=cfg.dropout,
    )


def velocity(unet: torch.nn.Module, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """v(x, t) for latents x (batch, C, h, w) and time t in [0, 1], scalar or (batch,).

    The UNet receives ``t * 1000`` as a float tensor: diffusers casts a Python float to int.
    """
    return unet(x, network_time(t, x.shape[0], x.device)).sample
