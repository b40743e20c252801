"""The probability path and the conditional flow-matching loss.

The one time convention of the project:

    t = 0 is domain A and t = 1 is domain B.
    x_t = (1 - t) * x_A + t * x_B + sigma_t * eps,    eps ~ N(0, I)
    u_t = x_B - x_A                                   (+ the SB-CFM term below)

    sigma_t = sigma                     for I-CFM and OT-CFM (Tong et al. 2023, eq. 14)
    sigma_t = sigma * sqrt(t (1 - t))   for SB-CFM (the Brownian bridge), whose target adds
              (1 - 2t) / (2 t (1 - t)) * sigma_t * eps                  (Tong et al. 2023, eq. 17)

Integrating the learned field from t=0 to 1 translates A -> B; from 1 to 0, B -> A.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

T_EPS = 1e-5  # keeps the SB-CFM term finite at the end points


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


def build_path(objective: str, sigma: float) -> ProbabilityPath:
    """The path an objective calls for: a Brownian bridge for sb-cfm, constant noise otherwise."""
    return ProbabilityPath(sigma, bridge=objective == "sb-cfm")


def cfm_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between predicted and target velocities, in float32."""
    return F.mse_loss(predicted.float(), target.float())
