"""Which float format a training stage computes in, from its ``mixed_precision`` setting."""

from __future__ import annotations

import torch


def native_bf16_cpu() -> bool:
    """Whether this CPU does bf16 arithmetic natively (AMX tiles or AVX512-BF16).

    There autocast to bf16 trains 1.6-1.7x faster (docs/PERFORMANCE.md); on other CPUs it is
    emulated and slower than float32.
    """
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def stage1_bf16(setting: str, device: torch.device | str) -> bool:
    """Whether stage 1 (``vae.own.mixed_precision``: auto | no | bf16) runs under bf16 autocast.

    ``auto`` is bf16 on a CPU with native bf16 arithmetic and float32 elsewhere (on a GPU stage
    1 is seconds long either way).
    """
    if setting == "auto":
        return torch.device(device).type == "cpu" and native_bf16_cpu()
    return setting == "bf16"
