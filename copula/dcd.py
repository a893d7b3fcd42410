"""DCD: the AR model as a copula over the denoiser's marginals (Liu et al. 2025).

Every requested masked position, and every masked position before it (the AR model needs them
as context), is drafted left to right from p_AR(· | x̃_<i) tilted by the denoiser's
bidirectional/causal log-ratio (see ``copula.draft``); clamped and revealed positions are kept.
The strategy then commits some of the drafted values:

* with ``LeftToRight``, each step commits the next block and the AR cache persists across
  steps: DCD's autoregressive variant (2 denoiser forwards per step, L AR tokens in total);
* with ``Ancestral``, each step redrafts and reveals a random subset: the chunked variant.

The one-coordinate copula step is an approximation of the true joint (it is exact when the
denoiser's marginals are already the AR model's); ``copula.CopulaISGuide`` corrects it.
"""

from __future__ import annotations

import torch

from copula.draft import CopulaDrafter
from decoding.cache import refuse_adaptive
from decoding.protocols import check_vocabularies
from decoding.types import Draft, GuideContext


def resolve_context(ar, context: int | str | None) -> int | None:
    """The AR model's context in tokens (None: the whole prefix) from a ``context`` option."""
    if context == "auto":
        return getattr(ar, "context", None)
    if context is None or context == "full":
        return None
    if isinstance(context, bool) or not isinstance(context, int) or context < 1:
        raise ValueError(f"context must be 'auto', 'full' or a positive int, got {context!r}")
    return context


def last_needed(request: torch.Tensor) -> int:
    """One past the rightmost requested position over the batch (0 when none)."""
    cols = request.any(dim=0).nonzero()
    return int(cols[-1]) + 1 if cols.numel() else 0


class CopulaGuide:
    """Draft masked positions left to right from the AR model tilted by the denoiser.

    Args:
        ar: AR model sharing the denoiser's tokenizer (``decoding.protocols.ARModel``).
        beta: weight of the log-ratio V (1 for text, as in the paper).
        first_token: "bos" (x̃_0 from the AR model after BOS, tilted like every position) or
            "marginal" (x̃_0 from the bidirectional marginal, the authors' rule).
        context: how many preceding tokens the AR model sees: "auto" reads ``ar.context``
            (None there: the whole prefix), an int sets it, "full" assumes the whole prefix
            (the paper's rule). A finite context hides the prefix beyond the AR model's window
            from the causal pass too (``copula.draft``), so V keeps what the denoiser sees
            there; with the whole prefix the guide is the paper's DCD.
    """

    def __init__(self, ar, beta: float = 1.0, first_token: str = "bos",
                 context: int | str = "auto"):
        self.ar, self.beta, self.first_token = ar, beta, first_token
        self.context = resolve_context(ar, context)
        self.drafter = CopulaDrafter(ar, beta, first_token, self.context)

    def check(self, denoiser) -> None:
        check_vocabularies(denoiser, self.ar)
        if not getattr(denoiser, "supports_causal", False):
            raise ValueError(f"{type(self).__name__} needs a denoiser with a causal (prefix-only) "
                             "mode: log_probs(x, t, causal=True); this one has supports_causal="
                             "False")

    def check_cache(self, strategy) -> None:
        """With a denoiser cache the causal pass is exact (causal attention never looks
        forward) and the bidirectional one is the cache's approximation."""
        refuse_adaptive(self, strategy)

    def start(self, x: torch.Tensor) -> None:
        self.drafter.reset()

    def needed_rows(self, masked: torch.Tensor, request: torch.Tensor, info) -> torch.Tensor:
        """The masked positions up to the last requested one: all of them are drafted."""
        pos = torch.arange(masked.shape[1], device=masked.device)
        return masked & (pos < last_needed(request))

    def propose(self, ctx: GuideContext, generator: torch.Generator) -> Draft:
        out = self.drafter.draft(ctx, last_needed(ctx.request), generator)
        return Draft(tokens=out.tokens)
