"""The Guide protocol."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from decoding.types import Draft, GuideContext


@runtime_checkable
class Guide(Protocol):
    """Proposes joint values for masked positions (Independent, EDLM energy, DCD copula).

    ``check(denoiser)`` runs once when a Coordinator is built and raises on incompatibility
    (vocabulary mismatch, no causal mode...). ``propose`` must return values for at least the
    requested positions and use only ``generator`` for randomness. An optional
    ``start(x)`` hook is called with the initial (B, L) tokens at the start of every batch.

    A guide that uses an AR model names it in an ``ar`` attribute and makes every call to it
    through ``ctx.ar``, the engine's counting handle over that model: AR forwards and token
    positions are then counted by the engine, never by the guide.

    An optional ``needed_rows(masked, request, info) -> (B, L) bool`` declares the positions
    whose marginals (and causal rows) ``propose`` will read this step; the Coordinator then
    asks a denoiser that supports it for those rows only. Without it every row is computed.

    Optional hooks for samplers whose outer loop is not the step grid:
    ``check_strategy(strategy)`` raises ValueError, when the Coordinator is built, for a
    strategy the algorithm cannot use; ``run(loop, x)`` takes over each batch's loop and
    returns (tokens (B, L), steps used per row (B,)), calling the models only through the
    ``decoding.loop.BatchLoop`` handle so that every forward is counted.
    """

    def check(self, denoiser) -> None: ...

    def propose(self, ctx: GuideContext, generator: torch.Generator) -> Draft: ...
