"""Top-k by confidence: draft every masked position, commit the k_t most confident.

Scores (higher is committed first):
  * ``prob``: q(drawn token) (MaskGIT, Chang et al. 2022; LLaDA ``low_confidence``);
  * ``margin``: q(top-1) - q(top-2) (Kim et al. 2025), which leaves out positions where the
    model hesitates between two tokens;
  * ``entropy``: minus the entropy of q (Dream, Ye et al. 2025).
Committed tokens are never revised; k_t follows the noise schedule.
"""

from __future__ import annotations

import torch
from torch import Tensor

from decoding.strategies.base import Strategy, reveal_counts, top_k_per_row
from decoding.types import Selection, StepInfo, StepState


def _margin(lp: Tensor) -> Tensor:
    top2 = lp.topk(2, dim=-1).values.exp()
    return top2[:, 0] - top2[:, 1]


def _neg_entropy(lp: Tensor) -> Tensor:
    p = lp.exp()
    return (p * lp.nan_to_num(neginf=0.0)).sum(dim=-1)


SCORES = ("prob", "margin", "entropy")


class Confidence(Strategy):
    """Commit the ``k_t`` masked positions with the highest score."""

    needs_draft = True

    def __init__(self, score: str = "prob"):
        if score not in SCORES:
            raise ValueError(f"Confidence score must be one of {SCORES}, got {score!r}")
        self.score = score

    def scores(self, state: StepState) -> Tensor:
        """(B, L) float64 score of every masked position."""
        if self.score == "prob":
            if state.draft_log_q is None:
                raise ValueError("Confidence(score='prob') needs the draft's log-probabilities")
            return state.draft_log_q
        if state.marginals is None:
            raise ValueError(f"Confidence(score={self.score!r}) needs the step's marginals")
        fn = _margin if self.score == "margin" else _neg_entropy
        return state.marginals.reduce(state.masked, fn)

    def select(self, info: StepInfo, state: StepState, generator: torch.Generator) -> Selection:
        k = reveal_counts(info, state)
        return Selection(reveal=top_k_per_row(self.scores(state), state.masked, k))
