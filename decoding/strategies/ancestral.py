"""Random (ancestral) unmasking: which positions are revealed does not depend on the values.

Austin et al. 2021 (D3PM); Sahoo et al. 2024 (MDLM, eq. 7); Lou et al. 2024 (SEDD, analytic
sampler for the absorbing process). In ``posterior`` mode each masked position is revealed with
probability (alpha_s - alpha_t) / (1 - alpha_t), independently; in ``exact`` mode each row
reveals exactly the schedule's count k_t, chosen uniformly among its masked positions.
"""

from __future__ import annotations

import torch

from decoding.strategies.base import Strategy, reveal_counts, top_k_per_row
from decoding.types import Selection, StepInfo, StepState

MODES = ("posterior", "exact")


class Ancestral(Strategy):
    """Reveal a random subset of the masked positions."""

    def __init__(self, mode: str = "posterior"):
        if mode not in MODES:
            raise ValueError(f"Ancestral mode must be one of {MODES}, got {mode!r}")
        self.mode = mode

    def select(self, info: StepInfo, state: StepState, generator: torch.Generator) -> Selection:
        masked = state.masked
        if info.is_last:
            return Selection(reveal=masked.clone())
        u = torch.rand(masked.shape, dtype=torch.float64, device=masked.device,
                       generator=generator)
        if self.mode == "posterior":
            p = (info.alpha_s - info.alpha_t) / (1.0 - info.alpha_t)
            return Selection(reveal=masked & (u < p))
        return Selection(reveal=top_k_per_row(u, masked, reveal_counts(info, state)))
