"""One batch's denoising loop, as a handle the Coordinator can lend to a guide.

The Coordinator runs the plain step grid through ``BatchLoop.step``. A guide with a
different outer loop (speculative decoding, APD: windows committed left to right; SMC:
particles resampled between steps) defines ``run(loop, x)`` and drives the batch itself,
but only through this handle: every denoiser call goes through ``marginals`` or ``step``
(counted, memoised), every AR call through ``ar`` (the Coordinator's counting handle,
``decoding.counting.CountingAR``), and the per-step trace is written with ``record``. So
forward counts stay the Coordinator's, whatever the loop.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from decoding.sampling import Marginals
from decoding.types import StepInfo, StepState


class BatchLoop:
    """Counted access to the models and the step machinery for one batch.

    Attributes:
        infos: the configured step grid (``StepInfo`` per step).
        strategy: the Coordinator's strategy; generator: the caller's generator.
        mask_id, vocab_size: the denoiser's.
        free: (B, L) bool, the positions the batch generates (False: clamped).
        ar: the guide's AR model behind the Coordinator's counting handle (None without one).
    """

    def __init__(self, coordinator, x: Tensor, infos: list[StepInfo], generator, trace,
                 ess_sums, bar):
        self.c = coordinator
        self.infos, self.generator = infos, generator
        self.strategy = coordinator.strategy
        self.mask_id, self.vocab_size = coordinator.mask_id, coordinator.vocab_size
        self.trace, self.ess_sums, self.bar = trace, ess_sums, bar
        self.ar = coordinator.ar
        self.batch = coordinator._new_batch(x)
        self.free = self.batch.free
        self.forwards = 0
        self.tokens = 0

    # ----- rows -------------------------------------------------------------------------
    def use_rows(self, x: Tensor, free: Tensor, index: Tensor | None = None) -> None:
        """Continue on a new set of rows (particles, or the rows still unfinished): ``x`` and
        ``free`` are (B', L); ``free`` marks each row's generated positions. ``index`` (B',)
        long: the new rows are the old rows ``index`` (resampled particles), so a denoiser
        KV cache is carried over, reordered as the rows are (as the AR cache is)."""
        self.forwards += self.batch.forwards
        self.tokens += self.batch.tokens
        old = self.batch
        self.batch = self.c._new_batch(x)
        self.batch.free = free
        if index is not None and old.cache is not None:
            self.batch.cache = old.cache.reorder(index)

    # ----- model calls ------------------------------------------------------------------
    def marginals(self, x: Tensor, t: float | Tensor, index: int | None = None,
                  need: Tensor | None = None) -> Marginals:
        """The denoiser's marginals for (B', L) ``x`` at the sampler's time t (one, or (B',)
        per row), transforms applied: one counted forward, none when x is unchanged.
        ``index``: the trace entry; ``need`` (B', L) bool: the rows that will be read (a
        denoiser that supports it computes only those)."""
        before, tokens = self.batch.forwards, self.batch.tokens
        out = Marginals(self.batch.rows(x, t, need=need), self.c.temperature, self.c.top_p)
        if index is not None:
            self.trace[index].denoiser_forwards += self.batch.forwards - before
            self.trace[index].denoiser_tokens += self.batch.tokens - tokens
        return out

    def row_times(self, x: Tensor) -> Tensor:
        """(B',) the sampler time at which each row's masked fraction is expected: alpha(t)
        = its unmasked fraction (rows advance at their own pace in the adaptive loops)."""
        frac = (x == self.mask_id).double().mean(dim=1).clamp(min=1e-3)
        return self.c.schedule.time_at(1.0 - frac)

    def record(self, index: int, revealed: int = 0, seconds: float = 0.0,
               ess: Tensor | None = None) -> None:
        """Add to the trace entry of step ``index``; ``ess`` (n,) per-sample values."""
        rec = self.trace[index]
        rec.revealed += int(revealed)
        rec.seconds += seconds
        if ess is not None:
            self.ess_sums[index][0] += ess.sum()  # read once, at the end of the run
            self.ess_sums[index][1] += ess.numel()

    def total_forwards(self) -> int:
        return self.forwards + self.batch.forwards

    def total_tokens(self) -> int:
        """Token positions the denoiser's forwards ran, summed over rows."""
        return self.tokens + self.batch.tokens

    # ----- the plain step ---------------------------------------------------------------
    def step(self, info: StepInfo, x: Tensor, confidence: Tensor):
        """One step of the grid with the Coordinator's strategy and guide.

        Returns (x, confidence, selection or None, draft or None); a step with nothing to do
        costs nothing.
        """
        t0 = time.perf_counter()
        rec = self.trace[info.index]
        before, tokens = self.batch.forwards, self.batch.tokens
        masked = x == self.mask_id
        sel = draft = None
        cache = self.batch.cache
        if masked.any() or self.strategy.remasks:
            state = StepState(x=x, masked=masked, free=self.batch.free, confidence=confidence)
            if cache is not None:
                cache.set_window(*self.strategy.cache_window(info, state))
                state.window = cache.window_mask()
            sel, draft = self.c._step(self.batch, info, state, self.generator)
            if cache is not None:
                cache.check_commits(sel.reveal, sel.remask, type(self.strategy).__name__)
            x, confidence = self.c._apply(x, masked, self.batch.free, confidence, sel, draft, rec)
            if draft is not None and not self.strategy.needs_draft:
                self.batch.forget()  # it revealed something (checked before its forward)
            if draft is not None and draft.ess is not None:
                self.record(info.index, ess=draft.ess)
        rec.denoiser_forwards += self.batch.forwards - before
        rec.denoiser_tokens += self.batch.tokens - tokens
        rec.seconds += time.perf_counter() - t0
        return x, confidence, sel, draft


def first_true(flags: Tensor) -> Tensor:
    """(B, L) bool -> (B,) long index of each row's first True (L if none)."""
    return torch.where(flags.any(dim=1), flags.long().argmax(dim=1), flags.shape[1])


def first_masked(x: Tensor, mask_id: int) -> Tensor:
    """(B, L) tokens -> (B,) long index of each row's first masked position (L if none)."""
    return first_true(x == mask_id)


def check_prefix_prompt(free: Tensor, who: str) -> None:
    """Refuse rows whose generated positions are not one suffix (infilling)."""
    later_clamped = (~free).long().flip(1).cummax(1).values.flip(1).bool()
    if (free & later_clamped).any():
        raise ValueError(f"{who} generates left to right after a prefix prompt; clamped "
                         "positions after a generated one (infilling) are not supported")
