"""Where the training latents live, and drawing batches from them.

The latent cache is float16 on disk. Training keeps it in the training device's memory (as
float16) when it fits, and otherwise reads rows from the memory-mapped cache file, so a data set
larger than the device (or host) memory still trains. Either way a drawn batch is the same
float32 tensor on the training device.
"""

from __future__ import annotations

import psutil
import torch

from translate.config import LATENT_STORAGES

MEMORY_SHARE = 0.25  # "auto" keeps the latents in memory when they take at most this share of it


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device``: CUDA memory for a GPU, available host memory otherwise."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def keep_in_memory(storage: str, nbytes: int, free: int) -> bool:
    """Resolve ``storage`` ("auto", "memory" or "mmap") for ``nbytes`` of latents."""
    if storage not in LATENT_STORAGES:
        raise ValueError(f"storage must be one of {LATENT_STORAGES}, got {storage!r}")
    if storage == "auto":
        return nbytes <= MEMORY_SHARE * free
    return storage == "memory"


class LatentSampler:
    """Draws batches of distinct rows from a latent tensor (N, C, h, w).

    ``latents`` may live on ``device`` or be a (memory-mapped) CPU tensor; batches are float32
    on ``device`` either way, with the same values.
    """

    def __init__(self, latents: torch.Tensor, device: torch.device | str | None = None) -> None:
        self.latents = latents
        self.device = torch.device(device) if device is not None else latents.device

    def __len__(self) -> int:
        return len(self.latents)

    def indices(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n row indices (CPU, int64), without repeats when N >= n."""
        count = len(self.latents)
        if count >= n:
            return torch.randperm(count, generator=generator)[:n]
        return torch.randint(count, (n,), generator=generator)

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` (n,) as float32 (n, C, h, w) on ``device``."""
        rows = self.latents[index.to(self.latents.device)]
        if rows.device != self.device:
            if self.device.type == "cuda":
                rows = rows.pin_memory()
            rows = rows.to(self.device, non_blocking=True)
        return rows.float()

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, C, h, w) float32 on ``device``: ``take(indices(n))``."""
        return self.take(self.indices(n, generator))
