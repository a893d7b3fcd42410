"""Confidence-threshold parallel decoding (Wu et al. 2025, Fast-dLLM, Sec. 3.3).

Every masked position (of the current block, inside ``Blocks``) is drafted and scored by its
confidence c_i = q(drawn token); the step commits

  * threshold rule: every position with c_i >= tau, and at least the ``min_per_step`` most
    confident ones when fewer pass (the paper: at least one);
  * factor rule (``factor`` = f set; it replaces tau): with c_(1) >= c_(2) >= ... the
    confidences sorted in descending order, the n most confident positions, n the largest
    such that (n + 1)(1 - c_(n)) <= f, i.e. c_(n) >= 1 - f / (n + 1) as the authors' code
    tests it, and again at least ``min_per_step``. Both sides grow with n, so the positions
    that pass are the first ones. (Their ``get_transfer_index_dynamic`` also commits the last
    position when only it fails; this rule does not.)

How many positions a step commits depends on the data, so the run's ``steps`` is a cap: the
last step of the cap commits every position still masked (inside ``Blocks``: the last step of
a block's share completes it, and a row moves to its next block as soon as its block is
done), steps after every row has finished cost nothing, and ``GenerationResult.steps_used``
reports the steps each sample actually used. A time-conditioned denoiser is called at the
time matching each row's masked fraction, not the step grid's.

Greedy or sampled, as in the authors' code: with the default guide the draft is drawn from q
and c is the probability of the drawn token (temperature > 0); ``guide=greedy`` drafts the
arg max and c is the largest probability (temperature 0).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from decoding.strategies.base import Strategy, top_k_per_row
from decoding.types import Selection, StepInfo, StepState


class Threshold(Strategy):
    """Commit the masked positions whose confidence passes the threshold (or factor) rule.

    Args:
        threshold: tau in (0, 1]; positions with q(draft) >= tau are committed.
        factor: f > 0, or None; when set, the factor rule decides instead of tau.
        min_per_step: the most confident positions committed at least (>= 1).
    """

    needs_draft = True
    adaptive = True

    def __init__(self, threshold: float = 0.9, factor: float | None = None,
                 min_per_step: int = 1):
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) \
                or not 0.0 < threshold <= 1.0:
            raise ValueError(f"Threshold threshold must lie in (0, 1], got {threshold!r}")
        if factor is not None and (not isinstance(factor, (int, float)) or isinstance(
                factor, bool) or not (factor > 0 and math.isfinite(factor))):
            raise ValueError(f"Threshold factor must be a finite number > 0 or null, "
                             f"got {factor!r}")
        if not isinstance(min_per_step, int) or isinstance(min_per_step, bool) \
                or min_per_step < 1:
            raise ValueError(f"Threshold min_per_step must be an integer >= 1, "
                             f"got {min_per_step!r}")
        self.threshold = float(threshold)
        self.factor = None if factor is None else float(factor)
        self.min_per_step = min_per_step

    def passing(self, conf: Tensor, masked: Tensor) -> Tensor:
        """(B,) long: how many masked positions of each row the rule accepts.

        Args:
            conf: (B, L) float64 confidence in [0, 1]; masked: (B, L) bool candidates.
        """
        if self.factor is None:
            return ((conf >= self.threshold) & masked).sum(dim=1)
        ranked = conf.masked_fill(~masked, -1.0).sort(dim=1, descending=True).values
        n = torch.arange(1, conf.shape[1] + 1, device=conf.device, dtype=torch.float64)
        ok = (ranked >= 1.0 - self.factor / (n + 1.0)) & (n <= masked.sum(dim=1, keepdim=True))
        return ok.long().cumprod(dim=1).sum(dim=1)

    def select(self, info: StepInfo, state: StepState, generator: torch.Generator) -> Selection:
        if info.is_last:  # the cap: nothing may stay masked
            return Selection(reveal=state.masked.clone())
        if state.draft_log_q is None:
            raise ValueError("Threshold needs the draft's log-probabilities")
        conf = state.draft_log_q.to(torch.float64).exp()
        k = self.passing(conf, state.masked).clamp(min=self.min_per_step)
        return Selection(reveal=top_k_per_row(conf, state.masked, k))
