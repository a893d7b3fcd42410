"""Noise schedules of the absorbing (masking) process and the per-step time grid.

A schedule gives alpha(t), the probability that a position is *unmasked* at time t in [0, 1]
(alpha(1) ~ 0: all masked, alpha(0) = 1: clean). A T-step sampler walks the uniform grid
t_j = 1 - j/T, j = 0..T, so the last step always lands on s = 0 and reveals everything left.

Reverse step t -> s for a masked position (Austin et al. 2021; MDLM eq. 7; SEDD's analytic
sampler): it becomes a real token with probability (alpha_s - alpha_t) / (1 - alpha_t).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class Schedule:
    """Base class: subclasses define ``alpha``."""

    def alpha(self, t: float) -> float:
        raise NotImplementedError

    def times(self, steps: int) -> list[float]:
        """The grid [t_0 = 1, ..., t_T = 0] of a ``steps``-step sampler."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return [1.0 - j / steps for j in range(steps)] + [0.0]

    def revealed_fraction(self, t: float) -> float:
        """Share of the generated positions that are unmasked at time t, scaled to [0, 1]."""
        a1 = self.alpha(1.0)
        return (self.alpha(t) - a1) / (1.0 - a1)


@dataclass(frozen=True)
class LogLinear(Schedule):
    """SEDD/MDLM: sigma(t) = -log(1 - (1-eps) t), so alpha_t = 1 - (1-eps) t."""

    eps: float = 1e-3

    def alpha(self, t: float) -> float:
        return 1.0 - (1.0 - self.eps) * t

    def sigma(self, t: float) -> float:
        """Total noise sigma(t), the conditioning input of SEDD-style networks."""
        return -math.log1p(-(1.0 - self.eps) * t)


@dataclass(frozen=True)
class Linear(Schedule):
    """alpha_t = 1 - t: the same number of positions revealed at every step."""

    def alpha(self, t: float) -> float:
        return 1.0 - t


@dataclass(frozen=True)
class Cosine(Schedule):
    """MaskGIT's cosine schedule: mask ratio cos(pi r / 2) at progress r = 1 - t.

    Few positions are revealed early (when little context exists) and more towards the end.
    """

    def alpha(self, t: float) -> float:
        return 1.0 - math.sin(0.5 * math.pi * t)
