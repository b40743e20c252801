"""Reflow with real targets: retraining the field on its own translations.

A round draws, from the current field, one translation of every training latent and then
regresses the field onto the straight paths between those fixed pairs instead of fresh
minibatch-OT pairs. Each pair has exactly one partner, so the regression target is no longer
the mean move towards all plausible partners (rectified flow's "reflow", Liu et al., ICLR 2023,
Alg. 1), and each pair keeps one *real* end, as in the iterative Markovian fitting of DSBM
(Shi et al., NeurIPS 2023, Alg. 1), which fits each direction on pairs drawn by the other:

- ``a2b`` pairs (T_BA(b), b) for every training B-latent b: the A -> B direction ends at a
  real B-latent;
- ``b2a`` pairs (a, T_AB(a)) for every training A-latent a: B -> A ends at a real A-latent;
- ``both`` holds both sets (one field serves both directions).

T_AB and T_BA are the field's inference translations (``translate.flow``'s time convention:
A at t = 0, B at t = 1), given as a ``Translate`` function; training uses ``reflow.nfe`` Euler
steps of the EMA field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from translate import atomic
from translate.config import REFLOW_PAIRS as PAIR_SETS
from translate.coupling import Pairing, pairwise_cost
from translate.latent_sampling import LatentSampler

# (latents (batch, C, h, w) on the device, direction "a2b" | "b2a") -> their translations
Translate = Callable[[torch.Tensor, str], torch.Tensor]


@dataclass(frozen=True)
class ReflowPairs:
    """Fixed pairs: row i of ``x0`` (an A-side latent) goes with row i of ``x1`` (B side)."""

    x0: torch.Tensor  # (N, C, h, w) float32
    x1: torch.Tensor  # (N, C, h, w) float32

    def __len__(self) -> int:
        return len(self.x0)

    def save(self, path: Path, metadata: dict[str, str]) -> None:
        """Write both tensors and ``metadata`` to one safetensors file, complete or absent."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_file(path) as tmp:
            tensors = {"x0": self.x0.contiguous(), "x1": self.x1.contiguous()}
            save_file(tensors, str(tmp), metadata=metadata)

    @classmethod
    def load(cls, path: Path, metadata: dict[str, str]) -> ReflowPairs:
        """Read pairs written by ``save``; ValueError when their ``metadata`` differs."""
        with safe_open(str(path), "pt") as handle:
            saved = handle.metadata() or {}
            if any(saved.get(key) != value for key, value in metadata.items()):
                raise ValueError(f"{path} was drawn with {saved}, expected {metadata}")
            return cls(handle.get_tensor("x0"), handle.get_tensor("x1"))


def translate_all(
    translate: Translate,
    latents: torch.Tensor,
    direction: str,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> torch.Tensor:
    """Every row of ``latents`` (N, C, h, w) translated in ``direction`` -> (N, C, h, w).

    Batch by batch, in order, on ``device``, each batch cast to float32 (``latents`` may be a
    memory-mapped cache) and computed in the precision ``translate`` runs in (the caller's
    autocast); returns float32 on the CPU.
    """
    out = []
    for start in range(0, len(latents), batch_size):
        x = latents[start : start + batch_size].to(device).float()
        out.append(translate(x, direction).float().cpu())
    return torch.cat(out) if out else latents.float().cpu()


def generate_pairs(
    translate: Translate,
    latents_a: torch.Tensor,
    latents_b: torch.Tensor,
    pair_set: str = "both",
    device: torch.device | str = "cpu",
) -> ReflowPairs:
    """The pairs of one reflow round from the training latents of A (N_A, ...) and B (N_B, ...).

    ``pair_set`` is ``a2b`` (N_B pairs (T_BA(b), b)), ``b2a`` (N_A pairs (a, T_AB(a))) or
    ``both`` (the a2b pairs, then the b2a pairs); ``translate`` runs on ``device``. The pairs
    are float32 on the CPU and take 2 x (N_A + N_B) latents of memory for ``both``.
    Deterministic when ``translate`` is. Raises ValueError for an unknown ``pair_set``.
    """
    if pair_set not in PAIR_SETS:
        raise ValueError(f"pair_set must be one of {PAIR_SETS}, got {pair_set!r}")
    x0, x1 = [], []
    if pair_set in ("both", "a2b"):
        x0.append(translate_all(translate, latents_b, "b2a", device))
        x1.append(latents_b.float().cpu())
    if pair_set in ("both", "b2a"):
        x0.append(latents_a.float().cpu())
        x1.append(translate_all(translate, latents_a, "a2b", device))
    return ReflowPairs(torch.cat(x0), torch.cat(x1))


class ReflowSource:
    """Each step: n pairs drawn from a round's ``ReflowPairs``, and n real latents per domain.

    The real latents (drawn as ``MinibatchPairs`` draws them) are what the adversarial term
    compares against and rolls out from, since one end of every reflow pair is generated.
    Uses only ``gens.data`` (a ``translate.prefetch.PairStream`` source).
    """

    def __init__(
        self, pairs: ReflowPairs, sample_a: LatentSampler, sample_b: LatentSampler
    ) -> None:
        self.sample_a, self.sample_b = sample_a, sample_b
        self.device = sample_a.device
        self.pairs = LatentSampler(pairs.x0, self.device), LatentSampler(pairs.x1, self.device)

    def __call__(self, n: int, gens) -> Pairing:
        rows = self.pairs[0].indices(n, gens.data)
        x0, x1 = self.pairs[0].take(rows), self.pairs[1].take(rows)
        real = (self.sample_a.draw(n, gens.data), self.sample_b.draw(n, gens.data))
        cost = pairwise_cost(x0, x1)
        ratio = (cost.diagonal().mean() / cost.mean().clamp_min(1e-12)).item()
        return Pairing(x0, x1, ratio, real=real)


def round_starts(share: float, rounds: int, steps: int) -> list[int]:
    """Optimizer steps after which each reflow round begins (empty: no reflow).

    The last ``round(share * steps)`` of ``steps`` are split into ``rounds`` equal rounds.
    """
    length = round(share * steps)
    if length == 0:
        return []
    first = steps - length
    return [first + length * r // rounds for r in range(rounds)]


def round_start(step: int, starts: list[int]) -> int | None:
    """The first step of the round that the coming step ``step + 1`` belongs to; None before
    the first round."""
    begun = [start for start in starts if start <= step]
    return begun[-1] if begun else None
