"""The default guide: every requested position drawn on its own from its marginal.

This is the plain parallel step of SEDD/MDLM: the joint proposal is the product of the
per-position marginals, which is what loses the dependence between tokens revealed together.
"""

from __future__ import annotations

import torch

from decoding.types import Draft, GuideContext


class Independent:
    """Factorised proposal: x0_i ~ q(x0_i | x_t) independently at each requested position."""

    def check(self, denoiser) -> None:
        """Nothing to check: works with any denoiser."""

    def needed_rows(self, masked: torch.Tensor, request: torch.Tensor, info) -> torch.Tensor:
        """Only the requested positions are drawn."""
        return request

    def propose(self, ctx: GuideContext, generator: torch.Generator) -> Draft:
        tokens, log_q = ctx.marginals.sample(ctx.request, generator)
        return Draft(tokens=torch.where(ctx.request, tokens[0], ctx.x), log_q=log_q[0])
