"""The vector field: a diffusers UNet2DModel and the one adapter that feeds it time."""

from __future__ import annotations

import torch
from diffusers import UNet2DModel

from translate.config import ModelConfig
from translate.flow import SourceCondition, network_time

DIRECTION_CLASSES = 2  # class 0: the row translates A -> B; class 1: B -> A


def build_unet(
    cfg: ModelConfig, sample_size: int, channels: int, conditioned: bool = False
) -> UNet2DModel:
    """A UNet2DModel for latents of shape (channels, sample_size, sample_size).

    ``conditioned``: the field also takes the clean source latent as ``channels`` extra input
    channels and its direction as a class label (``translate.flow.SourceCondition``).
    """
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention))
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=2 * channels if conditioned else channels,
        out_channels=channels,
        block_out_channels=tuple(cfg.block_out_channels),
        down_block_types=down,
        up_block_types=up,
        layers_per_block=cfg.layers_per_block,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups,
        dropout=cfg.dropout,
        num_class_embeds=DIRECTION_CLASSES if conditioned else None,
    )


def velocity(
    unet: torch.nn.Module,
    x: torch.Tensor,
    t: torch.Tensor | float,
    condition: SourceCondition | None = None,
) -> torch.Tensor:
    """v(x, t) for latents x (batch, C, h, w) and time t in [0, 1], scalar or (batch,).

    The UNet receives ``t * 1000`` as a float tensor: diffusers casts a Python float to int.
    A source-conditioned UNet (``build_unet(conditioned=True)``) needs ``condition``: its
    clean sources are concatenated to x as channels, its directions are the class labels.
    """
    time = network_time(t, x.shape[0], x.device)
    if condition is None:
        return unet(x, time).sample
    x = torch.cat([x, condition.source.to(x.dtype)], dim=1)
    return unet(x, time, class_labels=condition.from_b.long()).sample
