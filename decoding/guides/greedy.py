"""Greedy values: every requested position takes its most probable token (temperature 0).

This is the draft of LLaDA's and Fast-dLLM's samplers at temperature 0 (Nie et al. 2025; Wu
et al. 2025): x0_i = argmax_v q(v | x_t), so a confidence strategy scores each position by its
largest probability. Top-p and temperature do not move the arg max; the reported log q is
under the step's marginals as they are configured. No random draw is made.
"""

from __future__ import annotations

import torch

from decoding.types import Draft, GuideContext


class Greedy:
    """x0_i = argmax q(x0_i | x_t) at each requested position (ties: the lowest id)."""

    def check(self, denoiser) -> None:
        """Nothing to check: works with any denoiser."""

    def needed_rows(self, masked: torch.Tensor, request: torch.Tensor, info) -> torch.Tensor:
        """Only the requested positions are read."""
        return request

    def propose(self, ctx: GuideContext, generator: torch.Generator) -> Draft:
        best = ctx.marginals.reduce(ctx.request, lambda lp: lp.argmax(dim=-1)).long()
        return Draft(tokens=torch.where(ctx.request, best, ctx.x))  # log q: the Coordinator's
