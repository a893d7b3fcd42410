"""The AR handle the engine gives guides: every call is counted on the way through.

A guide that uses an AR model names it in its ``ar`` attribute; the Coordinator wraps it once in
``CountingAR`` and hands the wrapper to every ``propose`` as ``GuideContext.ar``. Guides make
their AR calls through it, so the forward and token counts that the frontier plots show are
right by construction, with no bookkeeping in the guide.

What counts: ``log_probs`` on (N, L) is one forward over N*L positions; ``start`` on B rows is
one forward over the B beginning-of-sequence contexts; ``extend`` with (B, n) tokens is one
forward over B*n positions. ``crop`` and ``reorder`` only edit the cache and cost nothing.

The denoiser's calls are counted by the engine as they are made (``DenoiserCount``): every
forward, cached or not, with the positions it ran through the network (B*L for an uncached
call; a cached one, ``decoding.cache``, runs the positions it recomputes only).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor


class CountingAR:
    """Wraps a ``decoding.protocols.ARModel``; ``forwards`` and ``tokens`` count its calls.

    Other attributes (``vocab_size``, ``max_length``, ...) are the wrapped model's.
    """

    def __init__(self, model):
        for attr in ("vocab_size", "log_probs"):
            if not hasattr(model, attr):
                raise TypeError(f"AR model lacks `{attr}` (see decoding.protocols.ARModel)")
        self.model = model
        self.forwards = 0
        self.tokens = 0

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not set in __init__ (the wrapped model's attributes).
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)

    def log_probs(self, x: Tensor) -> Tensor:
        """(N, L) long -> (N, L, V); counts one forward over N*L positions."""
        out = self.model.log_probs(x)
        self.forwards += 1
        self.tokens += x.numel()
        return out

    def token_log_probs(self, x: Tensor) -> Tensor:
        """(N, L) long -> (N, L) log-probs of the given tokens; counted like ``log_probs``.

        Uses the model's own ``token_log_probs`` when it has one (no (N, L, V) tensor held),
        else gathers ``log_probs``.
        """
        own = getattr(self.model, "token_log_probs", None)
        out = own(x) if own is not None else (
            self.model.log_probs(x).gather(-1, x[..., None]).squeeze(-1))
        self.forwards += 1
        self.tokens += x.numel()
        return out

    def start(self, batch_size: int) -> tuple[Tensor, Any]:
        """Open a cache; counts one forward over ``batch_size`` BOS contexts."""
        out = self.model.start(batch_size)
        self.forwards += 1
        self.tokens += batch_size
        return out

    def extend(self, cache: Any, tokens: Tensor) -> Tensor:
        """Feed (B, n) tokens; counts one forward over B*n positions."""
        out = self.model.extend(cache, tokens)
        self.forwards += 1
        self.tokens += tokens.numel()
        return out

    def crop(self, cache: Any, length: int) -> None:
        self.model.crop(cache, length)

    def reorder(self, cache: Any, index: Tensor) -> None:
        self.model.reorder(cache, index)

    def counts(self) -> tuple[int, int]:
        """(forwards, tokens) so far."""
        return self.forwards, self.tokens


class DenoiserCount:
    """Denoiser forwards and the token positions they recomputed (summed over rows)."""

    def __init__(self):
        self.forwards = 0
        self.tokens = 0

    def add(self, forwards: int, tokens: int) -> None:
        self.forwards += int(forwards)
        self.tokens += int(tokens)
