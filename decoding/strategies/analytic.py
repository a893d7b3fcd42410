"""SEDD's analytic sampler for the absorbing graph (Lou et al. 2024, "Discrete Diffusion
Modeling by Estimating the Ratios of the Data Distribution"; ``AnalyticPredictor`` and the
final denoise step of their ``sampling.py``).

The model's score s(x_t)_y (``decoding.protocols.Denoiser.log_probs_with_mass``) drives the
step t -> s. With dσ = σ(t) - σ(s), their staggered score times the transposed transition works
out, at a masked position, to p(y) ∝ (e^{dσ} - 1)·s_y for each real token y and
p(MASK) ∝ 1 - (e^{dσ} - 1)·Σ_y s_y, so the position is revealed with probability

    min(1, (e^{dσ} - 1)·Σ_y s_y)

and its value is drawn ∝ s_y, i.e. from the normalised marginals (here: by the guide). For the
true score, Σ_y s_y = α_t/(1-α_t) and this is exactly the MDLM posterior (α_s-α_t)/(1-α_t);
an imperfect model reveals faster or slower than the schedule. After the T predictor steps on
the grid linspace(1, t_min, T+1), a denoise step at t = t_min reveals every remaining mask
with values ∝ s_y: T+1 denoiser forwards in all, as ``run_sample.py`` runs them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from decoding.schedules import Schedule
from decoding.strategies.base import Strategy
from decoding.types import Selection, StepInfo, StepState


class Analytic(Strategy):
    """SEDD's analytic (Tweedie τ-leaping) step, then its denoise step.

    Args:
        t_min: end of the predictor grid, where the denoise step runs (SEDD's eps, 1e-5).
    """

    needs_mass = True

    def __init__(self, t_min: float = 1e-5):
        if not 0.0 < t_min < 1.0:
            raise ValueError(f"{type(self).__name__} t_min must be in (0, 1), got {t_min}")
        self.t_min = float(t_min)

    def times(self, schedule: Schedule, steps: int) -> list[float]:
        """linspace(1, t_min, steps + 1), then 0: ``steps`` predictor steps and the denoise step."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if not schedule.alpha(1.0) > 0:
            raise ValueError(f"{type(self).__name__} needs a schedule with alpha(1) > 0 (finite "
                             f"noise at t = 1, as SEDD's log-linear one); {schedule} has "
                             f"alpha(1) = {schedule.alpha(1.0)}")
        dt = (1.0 - self.t_min) / steps
        return [1.0 - j * dt for j in range(steps)] + [self.t_min, 0.0]

    def log_rate(self, info: StepInfo) -> float:
        """log(e^{dσ} - 1): the score mass times this is the reveal probability."""
        sched = info.schedule
        return math.log(math.expm1(sched.sigma(info.t) - sched.sigma(info.s)))

    def reveal_probability(self, info: StepInfo, log_mass: Tensor) -> Tensor:
        """(B, L) float64 min(1, rate·Σ_y s_y) from the (B, L) log score mass."""
        return (self.log_rate(info) + log_mass.to(torch.float64)).exp().clamp(max=1.0)

    def select(self, info: StepInfo, state: StepState, generator: torch.Generator) -> Selection:
        masked = state.masked
        if info.is_last:  # the denoise step
            return Selection(reveal=masked.clone())
        if state.log_mass is None:
            raise ValueError(f"{type(self).__name__} needs the denoiser's score mass; the "
                             "Coordinator provides it when this is the top-level strategy")
        if not torch.isfinite(state.log_mass[masked]).all():
            raise ValueError("the denoiser's score mass is NaN or infinite at a masked position")
        p = self.reveal_probability(info, state.log_mass)
        u = torch.rand(masked.shape, dtype=torch.float64, device=masked.device,
                       generator=generator)
        return Selection(reveal=masked & (u < p))
