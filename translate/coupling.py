"""Coupling of A-latents with B-latents: independent, exact OT, entropic OT, unbalanced OT.

Per batch (``Coupler``), across processes (``GlobalCoupler``) or once over the whole training
set (``DatasetPlan``; ``DatasetPlan.by_name`` holds a paired data set's true pairs instead).
The cost is the squared Euclidean distance of the flattened (optionally pooled) latents,
computed with torch on the latents' device; only the cost matrix goes to POT. With a colour
weight w > 0 (``flow.colour_weight``) the cost of each pair adds the squared distance of the two
images' colour features (``translate.colour.colour_histograms``), scaled so that it weighs w times
the latent cost on average (``pairing_cost``).
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
from translate.errors import TranslateError
from translate.latent_sampling import LatentSampler


@dataclass(frozen=True)
class Pairing:
    """Paired batches: row i of ``x0`` is matched with row i of ``x1``."""

    x0: torch.Tensor  # domain A latents, shape (batch, C, h, w)
    x1: torch.Tensor  # domain B latents, shape (batch, C, h, w)
    cost_ratio: float  # mean paired cost / mean cost of all pairs (1.0 for random pairs)
    # real (A, B) latents of the step when one end of the pairs is generated (translate.reflow);
    # None: x0 and x1 are themselves real
    real: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def real_ends(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Real A- and B-latents of this step, each (batch, C, h, w)."""
        return self.real if self.real is not None else (self.x0, self.x1)


def pairwise_cost(
    x0: torch.Tensor, x1: torch.Tensor, cost_resolution: int | None = None
) -> torch.Tensor:
    """Squared Euclidean cost of every row of x0 (n, ...) to x1 (m, ...) -> (n, m), float64."""
    if cost_resolution is not None and x0.dim() == 4 and x0.shape[-1] > cost_resolution:
        x0 = F.adaptive_avg_pool2d(x0.float(), cost_resolution)
        x1 = F.adaptive_avg_pool2d(x1.float(), cost_resolution)
    a, b = x0.flatten(1).double(), x1.flatten(1).double()
    return torch.cdist(a, b).pow(2)


def pairing_cost(
    x0: torch.Tensor,
    x1: torch.Tensor,
    cost_resolution: int | None = None,
    colours: tuple[torch.Tensor, torch.Tensor] | None = None,
    colour_weight: float = 0.0,
) -> torch.Tensor:
    """The plan's cost of every row of x0 (n, ...) to x1 (m, ...) -> (n, m), float64.

    ``pairwise_cost`` of the latents, plus, where ``colour_weight`` w > 0, the squared distance H
    of the rows' colour features ``colours`` = (f0 (n, d), f1 (m, d)) scaled to w times the
    latent cost's mean: C = L + w * (mean L / mean H) * H. The scale makes w unitless (w = 1:
    colour and layout weigh alike on average) and leaves a plan of equal batches unchanged by
    the latents' scale. Raises ValueError when w > 0 and no colour features are given.
    """
    cost = pairwise_cost(x0, x1, cost_resolution)
    if colour_weight <= 0:
        return cost
    if colours is None:
        raise ValueError("a colour weight > 0 needs the rows' colour features")
    colour = pairwise_cost(*(f.to(cost.device) for f in colours))
    scale = (cost.mean() / colour.mean().clamp_min(1e-12)).item()
    return cost.add_(colour, alpha=colour_weight * scale)  # in place: a dataset plan's is large


class Coupler:
    """Pairs two equal batches; subclasses differ only in the plan."""

    def __init__(self, cost_resolution: int | None = None, colour_weight: float = 0.0) -> None:
        self.cost_resolution = cost_resolution
        self.colour_weight = colour_weight

    def __call__(
        self,
        x0: torch.Tensor,
        x1: torch.Tensor,
        generator: torch.Generator,
        colours: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> Pairing:
        """Pair x0 (n, C, h, w) with x1 (n, C, h, w); ``colours``: the rows' colour features
        ((n, d), (n, d)), needed when ``colour_weight`` > 0 (``pairing_cost``)."""
        if len(x0) != len(x1):
            raise ValueError(f"batches must have equal size, got {len(x0)} and {len(x1)}")
        cost = pairing_cost(x0, x1, self.cost_resolution, colours, self.colour_weight)
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


def sample_pairs(
    plan: np.ndarray, n: int, generator: torch.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n (row, column) pairs drawn with replacement, each with probability proportional to its
    plan entry; uniform over all pairs when the plan holds no positive finite mass."""
    rows, cols = plan.shape
    probs = torch.as_tensor(plan.reshape(-1), dtype=torch.float64).clamp_min(0)
    if not torch.isfinite(probs).all() or probs.sum() <= 0:
        probs = torch.ones(rows * cols, dtype=torch.float64)
    flat = torch.multinomial(probs / probs.sum(), n, replacement=True, generator=generator)
    return (flat // cols).numpy(), (flat % cols).numpy()


class SinkhornCoupler(Coupler):
    """SB-CFM: entropic plan (``ot.sinkhorn``), n pairs sampled from it."""

    def __init__(
        self, reg: float, cost_resolution: int | None = None, colour_weight: float = 0.0
    ) -> None:
        super().__init__(cost_resolution, colour_weight)
        self.reg = reg  # as a fraction of the mean cost

    def match(self, cost: np.ndarray, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        n = len(cost)
        uniform = np.full(n, 1.0 / n)
        scale = max(float(cost.mean()), 1e-12)
        plan = ot.sinkhorn(uniform, uniform, cost / scale, self.reg, numItermax=2000)
        return sample_pairs(plan, n, generator)


def unbalanced_plan(
    cost: torch.Tensor, reg: float, tau: float, max_iter: int = 5000, tol: float = 1e-9
) -> torch.Tensor:
    """The unbalanced entropic OT plan between uniform weights, (n, m) -> (n, m) float64.

    Minimises <P, C> + reg * KL(P | a b^T) + rho * (KL(P 1 | a) + KL(P^T 1 | b)) with
    a = 1/n, b = 1/m and rho = reg * tau / (1 - tau) (Chizat et al., "Scaling algorithms for
    unbalanced optimal transport problems", Math. Comp. 2018, the KL proximal step; tau is the
    relaxation of ``ott-jax`` and UOT-FM, Eyring et al., ICLR 2024). Sinkhorn's iterations on
    the dual potentials f, g in the log domain, so that pairs whose kernel exp(-C/reg)
    underflows keep a finite, tiny mass (POT's ``sinkhorn_unbalanced`` returns the same plan
    where its kernel does not underflow). Each sweep is a contraction by tau**2.
    """
    cost = cost.double()
    n, m = cost.shape
    log_a, log_b = -torch.log(torch.tensor(float(n))), -torch.log(torch.tensor(float(m)))
    f = torch.zeros(n, dtype=torch.float64, device=cost.device)
    g = torch.zeros(m, dtype=torch.float64, device=cost.device)
    for _ in range(max_iter):
        f_new = -tau * reg * torch.logsumexp(log_b + (g[None, :] - cost) / reg, dim=1)
        g_new = -tau * reg * torch.logsumexp(log_a + (f_new[:, None] - cost) / reg, dim=0)
        change = max((f_new - f).abs().max().item(), (g_new - g).abs().max().item())
        f, g = f_new, g_new
        if change < tol:
            break
    return torch.exp(log_a + log_b + (f[:, None] + g[None, :] - cost) / reg)


class UnbalancedCoupler(Coupler):
    """Unbalanced entropic OT (UOT-FM, Eyring et al., ICLR 2024): n pairs sampled from the plan.

    ``unbalanced_plan`` on the cost divided by its mean. A row whose best partners are all far
    away gets less mass, so its pairs are drawn less often: fewer pairs of unrelated items in
    a batch, at the price of training on reweighted marginals. tau -> 1 is the balanced plan.
    """

    def __init__(
        self,
        reg: float,
        tau: float,
        cost_resolution: int | None = None,
        colour_weight: float = 0.0,
    ) -> None:
        super().__init__(cost_resolution, colour_weight)
        if not 0 < tau < 1:
            raise ValueError(f"tau must lie in (0, 1), got {tau}")
        self.reg, self.tau = reg, tau

    def match(self, cost: np.ndarray, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        scale = max(float(cost.mean()), 1e-12)
        plan = unbalanced_plan(torch.as_tensor(cost) / scale, self.reg, self.tau)
        return sample_pairs(plan.numpy(), len(cost), generator)


def build_coupler(cfg: FlowConfig) -> Coupler:
    """The coupler an objective calls for (sb-cfm with ``sinkhorn_reg=0``: the exact plan;
    ``unbalanced_tau`` < 1: the unbalanced entropic plan)."""
    cost = (cfg.cost_resolution, cfg.colour_weight)
    if cfg.unbalanced_tau < 1:
        return UnbalancedCoupler(cfg.unbalanced_reg, cfg.unbalanced_tau, *cost)
    if cfg.exact_plan:
        return ExactOTCoupler(*cost)
    if cfg.objective == "sb-cfm":
        return SinkhornCoupler(cfg.sinkhorn_reg, *cost)
    return IndependentCoupler(*cost)


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

    def __call__(
        self,
        x0: torch.Tensor,
        x1: torch.Tensor,
        generator: torch.Generator,
        colours: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> Pairing:
        n = len(x0)
        if colours is not None:
            colours = tuple(self.gather(f.contiguous()) for f in colours)
        pairing = self.coupler(
            self.gather(x0.contiguous()), self.gather(x1.contiguous()), generator, colours
        )
        part = slice(self.rank * n, (self.rank + 1) * n)
        return Pairing(pairing.x0[part], pairing.x1[part], pairing.cost_ratio)


MAX_DATASET_PAIRS = 10**8  # N_A * N_B; the float64 cost matrix takes 8 bytes per pair


@dataclass(frozen=True)
class DatasetPlan:
    """An exact OT plan between all A-latents and all B-latents, stored sparsely (CSR by row).

    Row i's partners are ``cols[start[i]:start[i + 1]]`` with probabilities proportional to
    their plan entries, kept as the running sum ``cumulative``. For equal, uniform data sets the
    plan is a permutation: one partner per row.
    """

    start: torch.Tensor  # (N_A + 1,) int64 offsets into cols and mass
    cols: torch.Tensor  # (nnz,) int64 B indices
    cumulative: torch.Tensor  # (nnz,) float64 running sum of the plan entries, in cols order
    cost_ratio: float  # mean paired cost / mean cost of all pairs

    @classmethod
    def solve(
        cls,
        latents_a: torch.Tensor,
        latents_b: torch.Tensor,
        cost_resolution: int | None = None,
        colours: tuple[torch.Tensor, torch.Tensor] | None = None,
        colour_weight: float = 0.0,
    ) -> DatasetPlan:
        """``ot.emd`` between uniform weights on latents_a (N_A, ...) and latents_b (N_B, ...)
        under ``pairing_cost`` (``colours``: the rows' colour features, (N_A, d) and (N_B, d))."""
        n, m = len(latents_a), len(latents_b)
        if n * m > MAX_DATASET_PAIRS:
            raise TranslateError(
                f"flow.scope=dataset solves one plan over all {n} x {m} training pairs; it "
                f"supports up to {MAX_DATASET_PAIRS:.0e} pairs (about 10,000 images per domain): "
                "use flow.scope=local or global"
            )
        cost = pairing_cost(
            latents_a.float(), latents_b.float(), cost_resolution, colours, colour_weight
        )
        cost = cost.cpu().numpy()
        plan = ot.emd(np.full(n, 1.0 / n), np.full(m, 1.0 / m), cost, numItermax=10**9)
        rows, cols = np.nonzero(plan > 1e-12 / (n * m))  # row-major: already grouped by row
        mass = plan[rows, cols]
        if len(np.unique(rows)) != n:
            raise TranslateError("the dataset-level OT solver did not converge")
        ratio = float((plan * cost).sum() / max(cost.mean(), 1e-12))
        start = np.searchsorted(rows, np.arange(n + 1))
        cumulative = torch.cumsum(torch.as_tensor(mass), 0)
        return cls(torch.as_tensor(start), torch.as_tensor(cols), cumulative, ratio)

    @classmethod
    def by_name(
        cls,
        names_a: list[str],
        names_b: list[str],
        latents_a: torch.Tensor,
        latents_b: torch.Tensor,
    ) -> DatasetPlan:
        """The true pairs of a paired data set: A row i (of ``names_a`` and ``latents_a``,
        (N_A, ...)) goes with the B row of the same file name (``names_b``, ``latents_b``).

        Names are ``"<domain folder>/<file>"`` as in ``translate.latent_cache.LatentSet`` (a
        flipped copy, ``...#flip``, pairs with the flipped copy of its counterpart). Not an
        unpaired coupling: a paired baseline, and the ceiling of what any coupling can give.
        Raises TranslateError when an A file has no B file of the same name.
        """
        index_b = {name.split("/", 1)[-1]: i for i, name in enumerate(names_b)}
        keys = [name.split("/", 1)[-1] for name in names_a]
        missing = [key for key in keys if key not in index_b]
        if missing:
            raise TranslateError(
                f"flow.scope=paired pairs files by name, but {len(missing)} of {len(keys)} A "
                f"training files have no B file of that name (e.g. {missing[0]}): use "
                "flow.scope=local for unpaired data"
            )
        n = len(keys)
        cols = torch.tensor([index_b[key] for key in keys], dtype=torch.int64)
        cumulative = torch.arange(1, n + 1, dtype=torch.float64) / n
        paired, norms, means = 0.0, [0.0, 0.0], []
        for which, latents in enumerate((latents_a, latents_b)):  # in chunks: may be memory maps
            total = torch.zeros(latents[0].numel(), dtype=torch.float64)
            for start in range(0, len(latents), 4096):
                rows = latents[start : start + 4096].flatten(1).double().cpu()
                total += rows.sum(0)
                norms[which] += rows.pow(2).sum().item() / len(latents)
                if which == 0:
                    index = cols[start : start + 4096].to(latents_b.device)
                    partners = latents_b[index].flatten(1).double().cpu()
                    paired += (rows - partners).pow(2).sum().item() / n
            means.append(total / len(latents))
        # the mean over all (i, j) of |a_i - b_j|^2, without the N_A x N_B matrix
        every = norms[0] + norms[1] - 2 * float(means[0] @ means[1])
        return cls(torch.arange(n + 1), cols, cumulative, paired / max(every, 1e-12))

    def partners(self, rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One B index per A index in ``rows`` (n,), drawn from each row's share of the plan."""
        first, last = self.start[rows], self.start[rows + 1]  # each row's entries
        cumulative = self.cumulative
        before = torch.where(first > 0, cumulative[(first - 1).clamp_min(0)], 0.0)
        target = before + torch.rand(len(rows), generator=generator, dtype=torch.float64) * (
            cumulative[last - 1] - before
        )
        pick = torch.searchsorted(cumulative, target, right=True)
        return self.cols[torch.minimum(torch.maximum(pick, first), last - 1)]


# ----------------------------------------------------------------- pair sources
class MinibatchPairs:
    """Each step: an A-batch and a B-batch drawn independently, paired by ``coupler``.

    ``colours``: every A- and B-latent's colour features ((N_A, d), (N_B, d), any device), for
    a coupler with a colour weight; the drawn rows' features go with them.
    """

    def __init__(
        self,
        sample_a: LatentSampler,
        sample_b: LatentSampler,
        coupler,
        colours: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        self.sample_a, self.sample_b, self.coupler = sample_a, sample_b, coupler
        self.colours = colours
        self.device = sample_a.device

    def __call__(self, n: int, gens) -> Pairing:
        rows_a = self.sample_a.indices(n, gens.data)
        rows_b = self.sample_b.indices(n, gens.data)
        x0, x1 = self.sample_a.take(rows_a), self.sample_b.take(rows_b)
        if self.colours is None:
            return self.coupler(x0, x1, gens.coupling)
        colours = tuple(
            f[rows.to(f.device)].to(self.device)
            for f, rows in zip(self.colours, (rows_a, rows_b), strict=True)
        )
        return self.coupler(x0, x1, gens.coupling, colours)


class PlanPairs:
    """Each step: n distinct A-latents and, for each, a partner from a fixed ``DatasetPlan``."""

    def __init__(self, sample_a: LatentSampler, sample_b: LatentSampler, plan: DatasetPlan):
        self.sample_a, self.sample_b, self.plan = sample_a, sample_b, plan
        self.device = sample_a.device

    def __call__(self, n: int, gens) -> Pairing:
        rows = self.sample_a.indices(n, gens.data)
        cols = self.plan.partners(rows, gens.coupling)
        return Pairing(self.sample_a.take(rows), self.sample_b.take(cols), self.plan.cost_ratio)
