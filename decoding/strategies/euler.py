"""SEDD's Euler sampler for the absorbing graph (Lou et al. 2024; ``EulerPredictor`` and the
final denoise step of their ``sampling.py``).

One step t -> s = t - dt follows the reverse rate for dt: at a masked position the rate to
each real token y is σ'(t)·s_y (the score times the forward rate), so the position is revealed
with probability

    min(1, dt·σ'(t)·Σ_y s_y)

and its value is drawn ∝ s_y (by the guide, from the normalised marginals). With the true score
this is a first-order approximation of the MDLM posterior; ``Analytic`` is exact for it. The
grid and the final denoise step are ``Analytic``'s: T+1 denoiser forwards.
"""

from __future__ import annotations

import math

from decoding.strategies.analytic import Analytic
from decoding.types import StepInfo


class Euler(Analytic):
    """SEDD's Euler step, then its denoise step.

    Args:
        t_min: end of the predictor grid, where the denoise step runs (SEDD's eps, 1e-5).
    """

    def log_rate(self, info: StepInfo) -> float:
        """log(dt·σ'(t)): the score mass times this is the reveal probability."""
        return math.log((info.t - info.s) * info.schedule.sigma_rate(info.t))
