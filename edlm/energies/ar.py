"""AR energies for EDLM (Xu et al. 2025, sec. 3.2): E(x0, x_t) = -log p_AR(x0) + log q(x0|x_t).

With that energy the EDLM joint denoiser q(x0|x_t) exp(-E) is the AR model's distribution
restricted to the sequences consistent with x_t, and the importance weight of a candidate drawn
from q is exp(-E). The *full* energy sums the AR log-likelihood over every position (a masked
choice changes how likely the following unmasked tokens are); the *carry-over* energy sums it
over the masked positions only, treating the unmasked tokens' terms as constant.
"""

from __future__ import annotations

import torch
from torch import Tensor

MAX_SCORE_ELEMENTS = 1 << 26  # (rows x L x V) floats per AR call: chunks bound the memory


class AREnergy:
    """E(x0, x_t) from an AR model; ``carry_over`` restricts the AR sum to masked positions."""

    def __init__(self, carry_over: bool = False):
        self.carry_over = carry_over

    def __call__(self, candidates: Tensor, masked: Tensor, log_q: Tensor, ar) -> Tensor:
        """Energies of N candidate sequences.

        Args:
            candidates: (N, L) long full sequences (no mask).
            masked: (N, L) bool, positions that were masked in x_t.
            log_q: (N,) float64, sum of log q over the masked positions.
            ar: the AR model, as the engine's counting handle (``GuideContext.ar``).
        Returns:
            (N,) float64 energies.
        """
        N, L = candidates.shape
        rows = max(1, MAX_SCORE_ELEMENTS // (L * ar.vocab_size))
        parts = []
        for start in range(0, N, rows):
            chunk = candidates[start : start + rows]
            if hasattr(ar, "token_log_probs"):  # the scored tokens only: no (n, L, V)
                tok_lp = ar.token_log_probs(chunk).to(torch.float64)
            else:
                lp = ar.log_probs(chunk)
                tok_lp = lp.gather(-1, chunk[..., None]).squeeze(-1).to(torch.float64)
            if self.carry_over:
                tok_lp = tok_lp.masked_fill(~masked[start : start + rows], 0.0)
            parts.append(tok_lp.sum(dim=1))
        return log_q - torch.cat(parts)
