"""Random (ancestral) unmasking: which positions are revealed does not depend on the values.

Austin et al. 2021 (D3PM); Sahoo et al. 2024 (MDLM, eq. 7); Lou et al. 2024 (SEDD, analytic
sampler for the absorbing process). In ``posterior`` mode each masked position is revealed with
probability (alpha_s - alpha_t) / (1 - alpha_t), independently; in ``exact`` mode each row
reveals exactly the schedule's count k_t, chosen uniformly among its masked positions.

Chunks (``chunk`` > 1; DCD's chunked sampler, Liu et al. 2025, Algorithm 1, 8 tokens in its
unconditional runs): the sequence is cut into fixed contiguous chunks [0, c), [c, 2c), ...
and the masked positions of one chunk are revealed together. In ``posterior`` mode each chunk
that still holds masked positions is revealed with the posterior probability above, so every
masked position is still revealed with that probability (the schedule's expected reveal rate
is kept), but neighbours inside a chunk are revealed jointly. Clamped positions are never
masked: a partly clamped chunk (a prompt ending inside it, an infill span's edge) moves its
masked positions as one unit. In ``exact`` mode chunks are taken in a uniformly random order
until the row's count k_t is reached; the last chunk taken may be revealed in part, and its
rest then moves as one unit in later steps. ``chunk=1`` is per-position unmasking.
"""

from __future__ import annotations

import torch

from decoding.strategies.base import Strategy, reveal_counts, top_k_per_row
from decoding.types import Selection, StepInfo, StepState

MODES = ("posterior", "exact")


class Ancestral(Strategy):
    """Reveal a random subset of the masked positions (or of contiguous chunks of them).

    Args:
        mode: "posterior" (independent reveals at the posterior rate) or "exact" (k_t per row).
        chunk: positions per contiguous chunk revealed together (>= 1; 1 = per position).
    """

    def __init__(self, mode: str = "posterior", chunk: int = 1):
        if mode not in MODES:
            raise ValueError(f"Ancestral mode must be one of {MODES}, got {mode!r}")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"Ancestral chunk must be an integer >= 1, got {chunk!r}")
        self.mode, self.chunk = mode, chunk

    def _uniforms(self, masked: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, L) float64 uniforms, shared by the positions of one chunk."""
        B, L = masked.shape
        n_chunks = -(-L // self.chunk)
        u = torch.rand(B, n_chunks, dtype=torch.float64, device=masked.device,
                       generator=generator)
        return u.repeat_interleave(self.chunk, dim=1)[:, :L]

    def select(self, info: StepInfo, state: StepState, generator: torch.Generator) -> Selection:
        masked = state.masked
        if info.is_last:
            return Selection(reveal=masked.clone())
        if self.chunk == 1:  # the per-position draws, as before chunks existed
            u = torch.rand(masked.shape, dtype=torch.float64, device=masked.device,
                           generator=generator)
        else:
            u = self._uniforms(masked, generator)
        if self.mode == "posterior":
            p = (info.alpha_s - info.alpha_t) / (1.0 - info.alpha_t)
            return Selection(reveal=masked & (u < p))
        # Equal uniforms inside a chunk: top_k's stable sort keeps the chunk's positions
        # together, left to right.
        return Selection(reveal=top_k_per_row(u, masked, reveal_counts(info, state)))
