"""ODE integration of a velocity field with torchdiffeq: Euler, midpoint, RK4, dopri5."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torchdiffeq import odeint

METHODS = ("euler", "midpoint", "rk4", "dopri5")
FIXED_STEP = ("euler", "midpoint", "rk4")

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # v(x (batch, ...), t scalar)


@dataclass(frozen=True)
class Solution:
    """The end state, and the states at ``times`` when a trajectory was asked for."""

    x: torch.Tensor  # (batch, ...) at the final time
    times: torch.Tensor  # (frames,)
    trajectory: torch.Tensor | None  # (frames, batch, ...) or None
    nfe: int  # evaluations of the field


def integrate(
    field: Field,
    x: torch.Tensor,
    t0: float = 0.0,
    t1: float = 1.0,
    steps: int = 8,
    method: str = "euler",
    return_trajectory: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    jump_times: Sequence[float] = (),
) -> Solution:
    """Solve dx/dt = field(x, t) from t0 to t1 (either direction) starting at x (batch, ...).

    Fixed-step methods take ``steps`` equal steps; dopri5 adapts its own steps and ``steps``
    only sets how many trajectory frames are reported. ``jump_times``: times where the field
    jumps (e.g. where autoguidance ends); dopri5 steps across them instead of shrinking its
    steps to resolve the jump.
    """
    if method not in METHODS:
        raise ValueError(f"unknown ODE method '{method}'; choose from: {', '.join(METHODS)}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    nfe = 0

    def rhs(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        nonlocal nfe
        nfe += 1
        return field(y, t)

    frames = steps + 1 if (return_trajectory or method in FIXED_STEP) else 2
    times = torch.linspace(t0, t1, frames, dtype=torch.float32, device=x.device)
    kwargs = {}
    if method == "dopri5":
        kwargs = {"rtol": rtol, "atol": atol}
        jumps = [t for t in jump_times if min(t0, t1) < t < max(t0, t1)]
        if jumps:
            kwargs["options"] = {"jump_t": torch.tensor(jumps, dtype=torch.float32)}
    with torch.no_grad():
        states = odeint(rhs, x, times, method=method, **kwargs)
    return Solution(states[-1], times, states if return_trajectory else None, nfe)
