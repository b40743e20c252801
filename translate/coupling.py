"""Minibatch coupling of an A-batch with a B-batch: independent, exact OT, entropic OT.

The cost is the squared Euclidean distance of the flattened (optionally pooled) latents,
computed with torch on the batches' device; only the (n, n) cost matrix goes to POT.
"""

from __future__ import annotations

import os

os.environ.setdefault("POT_BACKEND_DISABLE_PYTORCH", "1")  # POT must never touch CUDA memory

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import ot
import torch
import torch.nn.functional as F

from translate.config import FlowConfig


@dataclass(frozen=True)
class Pairing:
    """Paired batches: row i of ``x0`` is matched with row i of ``x1``."""

    x0: torch.Tensor  # domain A latents, shape (batch, C, h, w)
    x1: torch.Tensor  # domain B latents, shape (batch, C, h, w)
    cost_ratio: float  # mean paired cost / mean cost of all pairs (1.0 for random pairs)


def pairwise_cost(
    x0: torch.Tensor, x1: torch.Tensor, cost_resolution: int | None = None
) -> torch.Tensor:
    """Squared Euclidean cost of every row of x0 (n, ...) to x1 (m, ...) -> (n, m), float64."""
    if cost_resolution is not None and x0.dim() == 4 and x0.shape[-1] > cost_resolution:
        x0 = F.adaptive_avg_pool2d(x0.float(), cost_resolution)
        x1 = F.adaptive_avg_pool2d(x1.float(), cost_resolution)
    a, b = x0.flatten(1).double(), x1.flatten(1).double()
    return torch.cdist(a, b).pow(2)


class Coupler:
    """Pairs two equal batches; subclasses differ only in the plan."""

    def __init__(self, cost_resolution: int | None = None) -> None:
        self.cost_resolution = cost_resolution

    def __call__(self, x0: torch.Tensor, x1: torch.Tensor, generator: torch.Generator) -> Pairing:
        if len(x0) != len(x1):
            raise ValueError(f"batches must have equal size, got {len(x0)} and {len(x1)}")
        cost = pairwise_cost(x0, x1, self.cost_resolution)
        rows, cols = self.match(cost.cpu().numpy(), generator)
        rows_t = torch.as_tensor(rows, device=x0.device)
        cols_t = torch.as_tensor(cols, device=x1.device)
        paired = cost[rows_t.to(cost.device), cols_t.to(cost.device)].mean()
        ratio = (paired / cost.mean().clamp_min(1e-12)).item()
        return Pairing(x0[rows_t], x1[cols_t], ratio)

    def match(self, cost: np.ndarray, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Row and column indices of the n pairs, given the (n, n) cost matrix."""
        raise NotImplementedError


class IndependentCoupler(Coupler):
    """I-CFM: the two independently drawn batches are already random pairs."""

    def match(self, cost: np.ndarray, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        n = len(cost)
        return np.arange(n), np.arange(n)


class ExactOTCoupler(Coupler):
    """OT-CFM: the exact plan from ``ot.emd``, a permutation for equal uniform batches."""

    def match(self, cost: np.ndarray, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        n = len(cost)
        uniform = np.full(n, 1.0 / n)
        plan = ot.emd(uniform, uniform, cost, numItermax=max(100_000, 50 * n * n))
        cols = plan.argmax(axis=1)
        if len(np.unique(cols)) != n:  # degenerate solver output: fall back to Hungarian
            from scipy.optimize import linear_sum_assignment

            _, cols = linear_sum_assignment(cost)
        return np.arange(n), cols


class SinkhornCoupler(Coupler):
    """SB-CFM: entropic plan (``ot.sinkhorn``), n pairs sampled from it."""

    def __init__(self, reg: float, cost_resolution: int | None = None) -> None:
        super().__init__(cost_resolution)
        self.reg = reg  # as a fraction of the mean cost

    def match(self, cost: np.ndarray, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        n = len(cost)
        uniform = np.full(n, 1.0 / n)
        scale = max(float(cost.mean()), 1e-12)
        plan = ot.sinkhorn(uniform, uniform, cost / scale, self.reg, numItermax=2000)
        probs = torch.as_tensor(plan.reshape(-1), dtype=torch.float64).clamp_min(0)
        if not torch.isfinite(probs).all() or probs.sum() <= 0:
            probs = torch.ones(n * n, dtype=torch.float64)
        flat = torch.multinomial(probs / probs.sum(), n, replacement=True, generator=generator)
        return (flat // n).numpy(), (flat % n).numpy()


def build_coupler(cfg: FlowConfig) -> Coupler:
    """The coupler an objective calls for."""
    if cfg.objective == "ot-cfm":
        return ExactOTCoupler(cfg.cost_resolution)
    if cfg.objective == "sb-cfm":
        return SinkhornCoupler(cfg.sinkhorn_reg, cfg.cost_resolution)
    return IndependentCoupler(cfg.cost_resolution)


class GlobalCoupler:
    """Pairs the union of all processes' batches with one plan and returns this rank's slice.

    ``gather`` concatenates a tensor across processes in rank order (e.g. ``accelerator.gather``).
    Every rank solves the same problem with an identically seeded generator, so every rank
    holds the same plan.
    """

    def __init__(
        self,
        coupler: Coupler,
        gather: Callable[[torch.Tensor], torch.Tensor],
        rank: int,
        world_size: int,
    ) -> None:
        self.coupler, self.gather, self.rank, self.world_size = coupler, gather, rank, world_size

    def __call__(self, x0: torch.Tensor, x1: torch.Tensor, generator: torch.Generator) -> Pairing:
        n = len(x0)
        pairing = self.coupler(
            self.gather(x0.contiguous()), self.gather(x1.contiguous()), generator
        )
        part = slice(self.rank * n, (self.rank + 1) * n)
        return Pairing(pairing.x0[part], pairing.x1[part], pairing.cost_ratio)
