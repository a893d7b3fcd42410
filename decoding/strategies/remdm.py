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
``loop=True`` (ReMDM-loop): alpha is held at alpha(t_on) while t is in [t_off, t_on) and
remasking happens only there; before t_on and after t_off the steps are plain MDLM steps
(the time is rescaled so that alpha runs from alpha(1) to alpha(t_on), and from alpha(t_on)
to 1, over those phases).
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
                 t_on: float = 0.55, t_off: float = 0.05):
        if schedule not in SCHEDULES:
            raise ValueError(f"ReMDM schedule must be one of {SCHEDULES}, got {schedule!r}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"ReMDM eta must be in [0, 1], got {eta}")
        if loop and not 0.0 < t_off < t_on < 1.0:
            raise ValueError(f"ReMDM loop needs 0 < t_off < t_on < 1, got {t_off}, {t_on}")
        self.schedule, self.eta, self.loop = schedule, eta, loop
        self.t_on, self.t_off = t_on, t_off

    def _time(self, t: float) -> float:
        """Effective time of the loop variant (identity without loop)."""
        if not self.loop or t >= self.t_on:
            return t
        if t >= self.t_off:
            return self.t_on
        return t * self.t_on / self.t_off

    def _remasking(self, t: float) -> bool:
        return not self.loop or self.t_off <= t < self.t_on

    def select(self, info: StepInfo, state: StepState, generator: torch.Generator) -> Selection:
        masked = state.masked
        if info.is_last:
            return Selection(reveal=masked.clone())
        a_t = info.schedule.alpha(self._time(info.t))
        a_s = info.schedule.alpha(self._time(info.s))
        decoded = state.free & ~masked
        sigma_max = min(1.0, (1.0 - a_s) / a_t) if a_t > 0 else 0.0
        sigma = torch.zeros(masked.shape, dtype=torch.float64, device=masked.device)
        if self._remasking(info.t) and sigma_max > 0:
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
        p_reveal = ((a_s - (1.0 - sigma_bar) * a_t) / (1.0 - a_t)).clamp(0.0, 1.0)
        u = torch.rand(masked.shape, dtype=torch.float64, device=masked.device,
                       generator=generator)
        return Selection(reveal=masked & (u < p_reveal), remask=decoded & (u < sigma))
