"""The probability path and the conditional flow-matching loss.

The one time convention of the project:

    t = 0 is domain A and t = 1 is domain B.
    x_t = (1 - t) * x_A + t * x_B + sigma_t * eps,    eps ~ N(0, I)
    u_t = x_B - x_A                                   (+ the SB-CFM term below)

    sigma_t = sigma                     for I-CFM and OT-CFM (Tong et al. 2023, eq. 14)
    sigma_t = sigma * sqrt(t (1 - t))   for SB-CFM (the Brownian bridge), whose target adds
              (1 - 2t) / (2 t (1 - t)) * sigma_t * eps                  (Tong et al. 2023, eq. 17)

Integrating the learned field from t=0 to 1 translates A -> B; from 1 to 0, B -> A.

Training draws t from a named distribution (``TIME_SAMPLINGS``), and the one-step endpoint
predictions of a field v at (x_t, t) are  z_B = x_t + (1 - t) v  and  z_A = x_t - t v.

A source-conditioned field v(x, t | c) also sees the clean source latent c of its direction
and which end it starts from (``SourceCondition``), and starts from the noised source
c + sigma_s * eps (``noised_sources``): from x_A + sigma_s * eps at t = 0 for A -> B, from
x_B + sigma_s * eps at t = 1 for B -> A, so that one field still serves both directions.
``rollout_states`` gives the states the field itself reaches on the Euler grid of inference,
after the numbers of steps ``rollout_steps`` draws (``ROLLOUT_STATES``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

T_EPS = 1e-5  # keeps the SB-CFM term finite at the end points
TIME_SAMPLINGS = ("uniform", "logit-normal", "u-shape")
ROLLOUT_STATES = ("uniform", "last", "ends")  # which Euler states rollout_steps picks
TIME_SCALE = 1000.0  # t in [0, 1] -> the UNet's timestep input (network_time)


@dataclass(frozen=True)
class PathSample:
    """A point on the conditional path and its target velocity."""

    t: torch.Tensor  # (batch,)
    x_t: torch.Tensor  # (batch, C, h, w)
    u_t: torch.Tensor  # (batch, C, h, w), the regression target


def _expand(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(batch,) -> (batch, 1, 1, ...) broadcastable against ``like``."""
    return t.reshape(-1, *([1] * (like.dim() - 1))).to(like)


class ProbabilityPath:
    """The straight path between paired latents, with constant or Brownian-bridge noise."""

    def __init__(self, sigma: float = 0.0, bridge: bool = False) -> None:
        self.sigma = sigma
        self.bridge = bridge  # sigma_t = sigma * sqrt(t(1-t)) and the SB-CFM target term

    def sigma_t(self, t: torch.Tensor) -> torch.Tensor:
        """Noise scale at time t (batch,) -> (batch,)."""
        if self.bridge:
            return self.sigma * torch.sqrt(t * (1 - t))
        return torch.full_like(t, self.sigma)

    def sample(
        self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None
    ) -> PathSample:
        """x_t, u_t for A-latents x0 (batch, ...), B-latents x1 (batch, ...), times t (batch,)."""
        if self.bridge:
            t = t.clamp(T_EPS, 1 - T_EPS)
        tb = _expand(t, x0)
        x_t = (1 - tb) * x0 + tb * x1
        u_t = x1 - x0
        if self.sigma > 0:
            if noise is None:
                raise ValueError("a noise tensor is required when sigma > 0")
            sigma_t = _expand(self.sigma_t(t), x0)
            x_t = x_t + sigma_t * noise
            if self.bridge:
                u_t = u_t + (1 - 2 * tb) / (2 * tb * (1 - tb)) * sigma_t * noise
        return PathSample(t, x_t, u_t)


@dataclass(frozen=True)
class SourceCondition:
    """What a source-conditioned field sees besides (x, t): the clean source of each row."""

    source: torch.Tensor  # (batch, C, h, w): the clean source latent, x_A or x_B
    from_b: torch.Tensor  # (batch,) bool: True where the row translates B -> A

    @classmethod
    def of(cls, sources: torch.Tensor, from_b: torch.Tensor | bool) -> SourceCondition:
        """The condition of sources (batch, C, h, w) that all (bool) or each start from B."""
        from_b = torch.as_tensor(from_b, device=sources.device).bool().expand(len(sources))
        return cls(sources, from_b)

    def select(self, rows: torch.Tensor) -> SourceCondition:
        """The condition of the batch rows ``rows`` ((m,) int64 indices)."""
        return SourceCondition(self.source[rows], self.from_b[rows])

    def cat(self, other: SourceCondition) -> SourceCondition:
        """Both conditions' rows, ``self``'s first."""
        return SourceCondition(
            torch.cat([self.source, other.source]), torch.cat([self.from_b, other.from_b])
        )


def noised_sources(
    x0: torch.Tensor, x1: torch.Tensor, sigma_s: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, SourceCondition]:
    """Paired latents x0 (A), x1 (B), each (batch, C, h, w), with noise on each row's source end.

    Each row translates A -> B or B -> A with probability 1/2. Its source end gets
    ``sigma_s * eps`` (eps ~ N(0, I); sigma_s in normalised-latent units, whose std is about 1)
    and the clean source becomes its condition. Returns (x0', x1', condition); the path and its
    target u = x1' - x0' are then taken between the noised ends. The noise gives the field an
    input to choose one partner from, rather than regressing onto their mean, and the
    condition keeps the source's content (a conditional flow from N(source, sigma_s^2 I), as in
    the stochastic interpolants of Albergo et al. 2023, section 3.3, with a data-dependent
    base). Draws the roles and then eps from ``generator``.
    """
    from_b = torch.rand(len(x0), generator=generator, device=x0.device) < 0.5
    eps = torch.randn(x0.shape, generator=generator, device=x0.device)
    noised = sigma_s * eps
    on_b = _expand(from_b.to(x0.dtype), x0)
    x0_noised = x0 + (1 - on_b) * noised
    x1_noised = x1 + on_b * noised
    source = torch.where(on_b.bool(), x1, x0)
    return x0_noised, x1_noised, SourceCondition(source, from_b)


def sample_time(
    sampling: str, n: int, generator: torch.Generator, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Training times (n,) in [0, 1] from a named distribution.

    - ``uniform``: U(0, 1) (Lipman et al. 2023; Tong et al. 2023).
    - ``logit-normal``: sigmoid(N(0, 1)), weighting the middle of the path (Esser et al. 2024,
      "Scaling Rectified Flow Transformers", eq. 19 with m=0, s=1).
    - ``u-shape``: the arcsine law Beta(1/2, 1/2), t = (1 - cos(pi u)) / 2 with u ~ U(0, 1),
      weighting both ends, where the one-step endpoint predictions are made.

    Raises ValueError for an unknown name.
    """
    if sampling == "uniform":
        return torch.rand(n, generator=generator, device=device)
    if sampling == "logit-normal":
        return torch.sigmoid(torch.randn(n, generator=generator, device=device))
    if sampling == "u-shape":
        u = torch.rand(n, generator=generator, device=device)
        return (1 - torch.cos(torch.pi * u)) / 2
    raise ValueError(f"unknown time sampling {sampling!r}; choose from {TIME_SAMPLINGS}")


def predicted_endpoints(
    x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Euler step of the field to each end of the path: (z_A, z_B), each like ``x_t``.

    ``x_t`` and ``v`` (batch, C, h, w), ``t`` (batch,). z_B = x_t + (1 - t) v and
    z_A = x_t - t v: on a straight path with v = x_B - x_A both are exact (Liu et al. 2023,
    rectified flow, eq. 1 integrated in one step).
    """
    tb = _expand(t, x_t)
    return x_t - tb * v, x_t + (1 - tb) * v


def rollout_states(
    field: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    t_start: torch.Tensor,
    steps: int,
    k: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The field's own Euler states after k_i of ``steps`` steps, as inference reaches them.

    ``x`` (batch, C, h, w) are sources at ``t_start`` (batch,), each 0 (A, integrated towards
    t = 1) or 1 (B, integrated towards t = 0); ``k`` (batch,) integers in [0, steps). Returns
    (x_k, t_k): the states after k_i Euler steps of size 1/steps, and their times
    t_k = t_start +- k / steps. Step j evaluates ``field(x_rows, t_rows, rows)`` only on the
    rows still moving (k_i > j; ``rows`` (m,) int64 indexes the batch, for per-row
    conditioning), so a batch with k drawn uniformly costs about half of max(k) whole-batch
    evaluations (call it under ``torch.no_grad()`` for training). These are the inputs UNSB
    (Kim et al., ICLR 2024, Alg. 1) judges its predictions from, instead of points of the path.
    Raises ValueError when k is outside [0, steps).
    """
    if steps < 1 or (k.numel() and (k.min() < 0 or k.max() >= steps)):
        raise ValueError(f"k must lie in [0, {steps}), got {k.tolist()}")
    sign = 1 - 2 * t_start  # +1 from A, -1 from B
    t = t_start.clone()
    for j in range(int(k.max()) if k.numel() else 0):
        rows = torch.nonzero(k > j).squeeze(1)
        x_rows, t_rows = x[rows], t[rows]
        moved = x_rows + _expand(sign[rows] / steps, x_rows) * field(x_rows, t_rows, rows)
        x = x.index_copy(0, rows, moved)  # a new tensor: the caller's x stays the sources
        t = t + (k > j).to(t.dtype) * sign / steps
    return x, t


def rollout_steps(
    states: str, steps: int, n: int, generator: torch.Generator, device=None
) -> torch.Tensor:
    """How many of ``steps`` Euler steps each of n rolled-out sources takes: (n,) int64 in
    [0, steps), the ``k`` of ``rollout_states``.

    ``uniform``: k drawn uniformly, so every state of the K-step sampler is judged alike.
    ``last``: k = K - 1 for all, the state the sampler's last step starts from; the one-step
    prediction from it is the K-step Euler translation itself. ``ends``: k = 0 or K - 1 with
    equal chance, the one-step and the K-step translations. Raises ValueError for an unknown
    name or ``steps`` < 1.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if states == "uniform":
        return torch.randint(0, steps, (n,), generator=generator, device=device)
    if states == "last":
        return torch.full((n,), steps - 1, dtype=torch.int64, device=device)
    if states == "ends":
        return torch.randint(0, 2, (n,), generator=generator, device=device) * (steps - 1)
    raise ValueError(f"unknown rollout states {states!r}; choose from {ROLLOUT_STATES}")


def identity_rows(x_a: torch.Tensor, x_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each domain's latents placed at the other domain's end of the path: (x, t).

    ``x_a`` (m_a, C, h, w), ``x_b`` (m_b, C, h, w) -> x = [x_b; x_a] (m_b + m_a, C, h, w) and
    t = [0] * m_b + [1] * m_a (float32): B-latents at t = 0, where A -> B starts, and A-latents
    at t = 1, where B -> A starts. The target velocity of every row is 0 (``identity_loss``): a
    translation of an image that already belongs to the target domain should leave it where it
    is. This is CycleGAN's identity loss, |G_AB(b) - b| + |G_BA(a) - a| (Zhu et al., ICCV 2017,
    Sec. 5.2, after Taigman et al., ICLR 2017), which keeps the colour composition that both
    domains share; for a flow it is asked of the first velocity only, at the end the translation
    starts from. The regression's own rows there are the other domain's latents; where the two
    domains' latents are alike, the two terms pull against each other. Raises RuntimeError
    (``torch.cat``) when the two sets differ in C, h or w.
    """
    x = torch.cat([x_b, x_a])
    t = torch.cat([x_b.new_zeros(len(x_b)), x_a.new_ones(len(x_a))]).float()
    return x, t


def identity_loss(velocity: torch.Tensor) -> torch.Tensor:
    """Mean squared velocity of ``identity_rows`` (2m, C, h, w), in float32: a scalar."""
    return velocity.float().pow(2).mean()


def time_span(direction: str, strength: float = 1.0) -> tuple[float, float]:
    """(t_start, t_end) of a translation: a2b runs 0 -> strength, b2a 1 -> 1 - strength."""
    return (0.0, strength) if direction == "a2b" else (1.0, 1.0 - strength)


def network_time(t: torch.Tensor | float, batch: int, device: torch.device) -> torch.Tensor:
    """Times in [0, 1] (scalar or (batch,)) -> the UNet's timesteps (batch,), t * 1000 in float32.

    diffusers' sinusoidal embedding was designed for timesteps in [0, 1000], and a Python
    float would be cast to int, so the scale and the dtype are fixed here.
    """
    t = torch.as_tensor(t, dtype=torch.float32, device=device)
    return (t * TIME_SCALE).reshape(-1).expand(batch).float()


def build_path(objective: str, sigma: float) -> ProbabilityPath:
    """The path an objective calls for: a Brownian bridge for sb-cfm, constant noise otherwise."""
    return ProbabilityPath(sigma, bridge=objective == "sb-cfm")


def high_pass(x: torch.Tensor) -> torch.Tensor:
    """x (batch, C, h, w) minus its 3 x 3 box blur (zero for a constant field)."""
    return x - F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def cfm_loss(
    predicted: torch.Tensor, target: torch.Tensor, high_frequency_weight: float = 0.0
) -> torch.Tensor:
    """Mean squared error between predicted and target velocities (batch, C, h, w), in float32,
    plus ``high_frequency_weight`` times the mean squared ``high_pass`` of the error.

    Both terms are quadratic in the error, so the minimiser is the same (the conditional mean
    of u_t given x_t: Tong et al. 2023, eq. 9); the weight only changes which components the
    network fits first, against its bias towards low frequencies (Rahaman et al., ICML 2019).
    """
    predicted, target = predicted.float(), target.float()
    loss = F.mse_loss(predicted, target)
    if high_frequency_weight:
        loss = loss + high_frequency_weight * high_pass(predicted - target).pow(2).mean()
    return loss


@dataclass(frozen=True)
class CFMStep:
    """One flow-matching regression: the loss, the path sample and the predicted velocity."""

    loss: torch.Tensor  # scalar
    sample: PathSample
    velocity: torch.Tensor  # (batch, C, h, w), v(x_t, t)


def cfm_step(
    field: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    x1: torch.Tensor,
    path: ProbabilityPath,
    generator: torch.Generator,
    time_sampling: str = "uniform",
    high_frequency_weight: float = 0.0,
) -> CFMStep:
    """Sample t (and noise) on the path between paired latents x0, x1 (batch, C, h, w) and
    regress ``field(x_t, t)`` onto u_t (Tong et al. 2023, eq. 9 with the coupling's pairs)."""
    t = sample_time(time_sampling, len(x0), generator, x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device) if path.sigma > 0 else None
    sample = path.sample(x0, x1, t, noise)
    v = field(sample.x_t, sample.t)
    return CFMStep(cfm_loss(v, sample.u_t, high_frequency_weight), sample, v)
