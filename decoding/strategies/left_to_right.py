"""Left-to-right unmasking: each step reveals the next k_t masked positions in reading order.

With one position per step this is autoregressive decoding by the denoiser; with the DCD
guide it is DCD's autoregressive variant (Liu et al. 2025), where the AR model's cache is
reused across steps because the revealed prefix only grows.
"""

from __future__ import annotations

import torch

from decoding.strategies.base import Strategy, reveal_counts, top_k_per_row
from decoding.types import Selection, StepInfo, StepState


class LeftToRight(Strategy):
    """Reveal the leftmost masked positions; how many follows the schedule."""

    def select(self, info: StepInfo, state: StepState, generator: torch.Generator) -> Selection:
        L = state.masked.shape[1]
        leftmost_first = -torch.arange(L, device=state.masked.device, dtype=torch.float64)
        scores = leftmost_first.expand(state.masked.shape)
        return Selection(reveal=top_k_per_row(scores, state.masked, reveal_counts(info, state)))
