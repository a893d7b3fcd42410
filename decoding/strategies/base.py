"""Shared pieces of the step strategies: the base class, per-row counts and top-k."""

from __future__ import annotations

import torch
from torch import Tensor

from decoding.schedules import Schedule
from decoding.types import Selection, StepInfo, StepState


class Strategy:
    """Decides which positions to commit (and to remask) at each step; never calls a model.

    Class attributes:
        needs_draft: True when the choice depends on drafted values or their marginals
            (confidence-style strategies); otherwise the Coordinator asks first and drafts
            only the chosen positions, and skips the denoiser when nothing is chosen.
        remasks: True when decoded positions may be masked again (ReMDM).
        needs_mass: True when the choice depends on the denoiser's score mass (SEDD's own
            samplers): the Coordinator runs the denoiser first (``log_probs_with_mass``),
            then asks, then drafts only the chosen positions.
        adaptive: True when how many positions a step commits depends on the data
            (``Threshold``): ``steps`` is then a cap, the Coordinator reports the steps each
            sample used (``GenerationResult.steps_per_sample``) and calls a time-conditioned
            denoiser at each row's masked fraction instead of the step grid's time.
    """

    needs_draft: bool = False
    remasks: bool = False
    needs_mass: bool = False
    adaptive: bool = False
    windowed: bool = False  # True: every step commits inside ``cache_window`` (Blocks)

    def check(self, steps: int, length: int) -> None:
        """Raise ValueError for settings that cannot work with this steps/length."""

    def times(self, schedule: Schedule, steps: int) -> list[float]:
        """The time grid [t_0 = 1, ..., 0] of a ``steps``-step run (one step per interval)."""
        return schedule.times(steps)

    def cache_window(self, info: StepInfo, state: StepState) -> tuple[Tensor, int]:
        """((B,) long first position of each row's current block, block length): every
        position this step commits (or remasks) lies in the block. Strategies with
        ``windowed`` only; a denoiser KV cache (``decoding.cache``) recomputes that block."""
        raise NotImplementedError(f"{type(self).__name__} has no block window")

    def draft_region(self, info: StepInfo, state: StepState) -> Tensor:
        """(B, L) bool: positions that need drafted values before ``select`` (needs_draft).

        ``select`` may read the step's marginals only inside this region: with a denoiser
        that computes chosen rows only, no other row exists (reading one fails loudly).
        """
        return state.masked

    def select(self, info: StepInfo, state: StepState, generator: torch.Generator) -> Selection:
        raise NotImplementedError


def reveal_counts(info: StepInfo, state: StepState) -> Tensor:
    """How many masked positions each row reveals this step, following the schedule -> (B,).

    Row b has n_b generated positions; after the step, round(n_b (1 - f(s))) of them should
    remain masked, f being the schedule's revealed fraction. Counting from the positions masked
    now (not from the step index) keeps the totals exact and lets the last step reveal all.
    """
    n_free = state.free.sum(dim=1).to(torch.float64)
    keep = torch.floor(n_free * (1.0 - info.schedule.revealed_fraction(info.s)) + 0.5).long()
    n_masked = state.masked.sum(dim=1)
    if info.is_last:
        return n_masked
    return (n_masked - keep).clamp(min=0)


def top_k_per_row(scores: Tensor, candidates: Tensor, k: Tensor) -> Tensor:
    """Mark the ``k[b]`` highest-scoring candidate positions of each row.

    Args:
        scores: (B, L) float; higher is chosen first (ties: lower position first).
        candidates: (B, L) bool, positions that may be chosen.
        k: (B,) long, how many to choose per row (capped at the number of candidates).
    Returns:
        (B, L) bool.
    """
    s = scores.to(torch.float64).masked_fill(~candidates, -torch.inf)
    order = s.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(s.shape[1], device=s.device)
                                            .expand_as(order).contiguous())
    return (rank < k[:, None]) & candidates
