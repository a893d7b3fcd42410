"""ReMDM remasking (Wang et al. 2025, "Remasking Discrete Diffusion Models with Inference-Time
Scaling"): decoded tokens may be masked again, so errors can be repaired and the number of
steps may exceed the length.

Per step t -> s, with sigma_t <= sigma_max = min(1, (1 - alpha_s) / alpha_t) (ReMDM eq. 6):
a decoded position is remasked with probability sigma_t, and a masked one is revealed with
probability (alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t), which keeps the marginal
masking rate on the schedule. Schedules of sigma_t (ReMDM sec. 4.1):
  * ``cap``: min(eta, sigma_max);   * ``rescale``: eta * sigma_max;
  * ``conf``: sigma_max spread over decoded positions by softmax(-confidence at decode time),
    so the least confident tokens are remasked first.
``loop=True`` (ReMDM-loop, ReMDM sec. 4.1) replaces the base schedule by its own three phases:
  1. t >= t_on: plain MDLM steps on alpha(t) = (1 - t) alpha_on / (1 - t_on), from 0 at t = 1
     up to ``alpha_on`` at t_on (a share 1 - alpha_on of the positions is still masked);
  2. t_off <= t <= t_on: alpha held at alpha_on; decoded tokens are remasked with sigma_t and
     masked ones revealed at the matching rate, so the masked share stays 1 - alpha_on;
  3. t <= t_off: plain MDLM steps on alpha(t) = 1 - (1 - alpha_on) t / t_off, down to 1 at 0.
``alpha_on`` is its own parameter (0.9 in the paper), not alpha(t_on) of the base schedule.
Remasking happens in the steps that lie inside phase 2 only.
"""

from __future__ import annotations

import torch

from decoding.strategies.base import Strategy
from decoding.types import Selection, StepInfo, StepState

SCHEDULES = ("cap", "rescale", "conf")


class ReMDM(Strategy):
    """Ancestral unmasking with remasking of decoded tokens."""

    remasks = True

    def __init__(self, schedule: str = "cap", eta: float = 0.04, loop: bool = False,
                 t_on: float = 0.55, t_off: float = 0.05, alpha_on: float = 0.9):
        if schedule not in SCHEDULES:
            raise ValueError(f"ReMDM schedule must be one of {SCHEDULES}, got {schedule!r}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"ReMDM eta must be in [0, 1], got {eta}")
        if loop and not 0.0 < t_off < t_on < 1.0:
            raise ValueError(f"ReMDM loop needs 0 < t_off < t_on < 1, got {t_off}, {t_on}")
        if not 0.0 < alpha_on <= 1.0:
            raise ValueError(f"ReMDM alpha_on must be in (0, 1], got {alpha_on}")
        self.schedule, self.eta, self.loop = schedule, eta, loop
        self.t_on, self.t_off, self.alpha_on = t_on, t_off, alpha_on

    def alpha(self, t: float, info: StepInfo) -> float:
        """alpha(t): the base schedule's, or the loop's three-phase one."""
        if not self.loop:
            return info.schedule.alpha(t)
        if t >= self.t_on:
            return (1.0 - t) * self.alpha_on / (1.0 - self.t_on)
        if t >= self.t_off:
            return self.alpha_on
        return 1.0 - (1.0 - self.alpha_on) * t / self.t_off

    def _remasking(self, info: StepInfo) -> bool:
        return not self.loop or (info.t <= self.t_on and info.s >= self.t_off)

    def select(self, info: StepInfo, state: StepState, generator: torch.Generator) -> Selection:
        masked = state.masked
        if info.is_last:
            return Selection(reveal=masked.clone())
        a_t, a_s = self.alpha(info.t, info), self.alpha(info.s, info)
        decoded = state.free & ~masked
        sigma_max = min(1.0, (1.0 - a_s) / a_t) if a_t > 0 else 0.0
        sigma = torch.zeros(masked.shape, dtype=torch.float64, device=masked.device)
        if self._remasking(info) and sigma_max > 0:
            if self.schedule == "cap":
                sigma[:] = min(self.eta, sigma_max)
            elif self.schedule == "rescale":
                sigma[:] = self.eta * sigma_max
            else:
                neg_conf = (-state.confidence).masked_fill(~decoded, -torch.inf)
                weights = torch.softmax(neg_conf, dim=1).nan_to_num(0.0)  # rows with none decoded
                sigma = weights * sigma_max
        sigma = sigma * decoded
        # The reveal rate uses the mean sigma over decoded positions so that, in expectation,
        # the number of masked positions follows the schedule.
        n_dec = decoded.sum(dim=1, keepdim=True).clamp(min=1)
        sigma_bar = sigma.sum(dim=1, keepdim=True) / n_dec
        p_reveal = ((a_s - (1.0 - sigma_bar) * a_t) / (1.0 - a_t)).clamp(0.0, 1.0) \
            if a_t < 1.0 else torch.ones_like(sigma_bar)
        u = torch.rand(masked.shape, dtype=torch.float64, device=masked.device,
                       generator=generator)
        return Selection(reveal=masked & (u < p_reveal), remask=decoded & (u < sigma))
