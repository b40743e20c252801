import math

import pytest
import torch

from translate.solvers import METHODS, integrate


def decay(x, t):  # dx/dt = -x  ->  x(t) = x0 * exp(-t)
    return -x


@pytest.mark.parametrize(
    "method, steps, tol",
    [("euler", 400, 2e-3), ("midpoint", 50, 1e-4), ("rk4", 10, 1e-5), ("dopri5", 1, 1e-4)],
)
def test_exponential_decay(method, steps, tol):
    x = torch.tensor([[1.0, -2.0]])
    sol = integrate(decay, x, 0.0, 1.0, steps, method)
    torch.testing.assert_close(sol.x, x * math.exp(-1.0), atol=tol, rtol=0)


def test_time_dependent_field():  # dx/dt = 2t -> x(1) = x(0) + 1
    x = torch.zeros(3, 2)
    sol = integrate(lambda y, t: torch.full_like(y, 2.0) * t, x, 0.0, 1.0, 4, "midpoint")
    torch.testing.assert_close(sol.x, torch.ones(3, 2))


@pytest.mark.parametrize("method", METHODS)
def test_forward_then_backward_returns_the_input(method):
    def rotate(y, t):  # a smooth, time-dependent rotation field
        return torch.stack([-y[:, 1], y[:, 0]], dim=1) * (1 + t)

    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    steps, tol = (2000, 5e-3) if method == "euler" else (64, 1e-4)  # Euler is first order
    forward = integrate(rotate, x, 0.0, 1.0, steps, method)
    back = integrate(rotate, forward.x, 1.0, 0.0, steps, method)
    torch.testing.assert_close(back.x, x, atol=tol, rtol=0)


def test_trajectory_and_nfe():
    x = torch.ones(2, 3)
    sol = integrate(decay, x, 0.0, 1.0, 5, "euler", return_trajectory=True)
    assert sol.trajectory.shape == (6, 2, 3) and sol.nfe == 5
    torch.testing.assert_close(sol.trajectory[0], x)
    assert integrate(decay, x, 0, 1, 5, "rk4").nfe == 20


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown ODE method"):
        integrate(decay, torch.ones(1), method="heun")
    with pytest.raises(ValueError, match="at least 1"):
        integrate(decay, torch.ones(1), steps=0)


def test_dopri5_steps_across_a_jump_it_is_told_of():
    """dx/dt = 1 before t = 0.5 and 3 after it: told of the jump, dopri5 lands on x(1) = 2 in
    far fewer field evaluations than when it has to find the jump by shrinking its steps."""

    def field(x, t):
        return torch.full_like(x, 1.0 if float(t) < 0.5 else 3.0)

    x = torch.zeros(2, 3)
    told = integrate(field, x, 0.0, 1.0, 1, "dopri5", jump_times=[0.5])
    found = integrate(field, x, 0.0, 1.0, 1, "dopri5")
    assert torch.allclose(told.x, torch.full_like(x, 2.0), atol=1e-4)
    assert told.nfe < found.nfe
    back = integrate(field, told.x, 1.0, 0.0, 1, "dopri5", jump_times=[0.5])  # either direction
    assert torch.allclose(back.x, x, atol=1e-4)
    outside = integrate(field, x, 0.0, 0.4, 1, "dopri5", jump_times=[0.5])  # ignored outside
    assert torch.allclose(outside.x, torch.full_like(x, 0.4), atol=1e-5)
