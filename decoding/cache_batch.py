"""The engine's side of the denoiser KV cache (``decoding.cache``): one batch's stores and the
plan of each cached call.

Each row works in a window (the strategy's current block, ``set_window`` at every step). A
call with bidirectional attention (``cache_block`` None) refreshes a row's store when the row
has none, when its window moved since the last refresh (a new block) or after
``refresh_every`` calls; otherwise it recomputes the window only (``dual``) or the window and
everything after it (``prefix``). Rows that need a refresh and rows that do not are run as two
forwards (both counted), so a batch whose rows move to their next block at different steps
(the adaptive ``Threshold`` inside ``Blocks``) refreshes only the rows that moved. A call with
block-causal or causal attention (``cache_block`` k) is exact: it recomputes from the first
position whose stored keys no longer match the tokens (block-aligned, and everything when a
time-conditioned model's time changed) up to the end of the window.
"""

from __future__ import annotations

import torch
from torch import Tensor

from decoding.cache import CacheCall, KVStore
from decoding.checks import device_check, not_any


def _first_true(flags: Tensor) -> Tensor:
    return torch.where(flags.any(dim=1), flags.long().argmax(dim=1), flags.shape[1])


class _Slot:
    """The store of one kind of call (bidirectional or causal) and what it was computed from:
    ``x`` (B, L) the token each stored position saw (-1: not valid), ``t`` (B,) the time,
    ``window`` (B,) the window start at the last refresh, ``since`` (B,) calls since then."""

    def __init__(self, batch: int, length: int, device):
        self.store: KVStore | None = None
        self.x = torch.full((batch, length), -1, dtype=torch.long, device=device)
        self.t = torch.full((batch,), float("nan"), device=device)
        self.window = torch.full((batch,), -1, dtype=torch.long, device=device)
        self.since = torch.zeros(batch, dtype=torch.long, device=device)

    def select(self, index: Tensor) -> _Slot:
        new = _Slot.__new__(_Slot)
        new.store = None if self.store is None else self.store.select(index)
        new.x, new.t = self.x[index], self.t[index]
        new.window, new.since = self.window[index], self.since[index]
        return new


class BatchCache:
    """The KV stores of one batch (one per attention kind) and the current windows.

    Args:
        denoiser: a denoiser with ``supports_cache`` and ``cache_block``.
        mode: "prefix" or "dual".
        refresh_every: rebuild a row's bidirectional store after this many calls (None:
            only when its window moves).
        x: (B, L) the batch's tokens (for the shapes).
    """

    def __init__(self, denoiser, mode: str, refresh_every: int | None, x: Tensor):
        self.denoiser, self.mode, self.refresh_every = denoiser, mode, refresh_every
        self.time_conditioned = bool(getattr(denoiser, "time_conditioned", True))
        B, L = x.shape
        self.length = L
        self.slots = {c: _Slot(B, L, x.device) for c in (False, True)}
        self.start: Tensor | None = None
        self.width = 0

    # ----- windows ----------------------------------------------------------------------
    def set_window(self, start: Tensor, width: int) -> None:
        """Each row's current block [start, start + width) ((B,) long); a block cut short by
        the end of the sequence gets the window [L - width, L), which holds it."""
        self.width = max(1, min(int(width), self.length))
        self.start = start.long().clamp(min=0, max=self.length - self.width)

    def window_mask(self) -> Tensor:
        """(B, L) bool, the positions of each row's window."""
        pos = torch.arange(self.length, device=self.start.device)
        return (pos >= self.start[:, None]) & (pos < self.start[:, None] + self.width)

    def check_commits(self, reveal: Tensor, remask: Tensor | None, who: str) -> None:
        """A strategy step must commit inside each row's window."""
        outside = reveal if remask is None else reveal | remask
        device_check(not_any(outside & ~self.window_mask()), f"{who} committed positions "
                     "outside the current block; a denoiser cache needs every commit of a "
                     "step inside the block (use cache=none)", RuntimeError)

    def reorder(self, index: Tensor) -> BatchCache:
        """A cache for the rows ``index`` (B',) long (selected, repeated: resampled particles)."""
        new = BatchCache.__new__(BatchCache)
        new.__dict__.update(self.__dict__)
        new.slots = {c: s.select(index) for c, s in self.slots.items()}
        new.start = None if self.start is None else self.start[index]
        return new

    # ----- calls ------------------------------------------------------------------------
    def call(self, x: Tensor, t: Tensor, causal: bool,
             need: Tensor | None) -> tuple[Tensor, Tensor, int, int]:
        """One cached call for (B, L) ``x`` at (B,) denoiser times ``t``.

        Returns (packed (n, V) log-probs, the (B, L) rows they are, forwards, tokens). The
        rows are ``need``, which must lie inside the windows (None: the whole windows).
        """
        if self.start is None:
            raise RuntimeError("a cached denoiser call needs the strategy's window first")
        win = self.window_mask()
        if need is None:
            need = win
        device_check(not_any(need & ~win), "a step asked for denoiser rows outside the current "
                     "block (a strategy committing outside it, or a guide reading there); the "
                     "denoiser cache computes the block only (use cache=none)", RuntimeError)
        slot = self.slots[causal]
        block = self.denoiser.cache_block(causal)
        if block is not None:
            return self._exact(slot, x, t, causal, need, int(block))
        B = x.shape[0]
        if slot.store is None:
            due = torch.ones(B, dtype=torch.bool, device=x.device)
        else:
            due = slot.window != self.start
            if self.refresh_every is not None:
                due |= slot.since >= self.refresh_every
        flags = due.tolist()  # host read: which rows run the full forward
        if all(flags):
            call = CacheCall(slot.store, None, self.length)
            lp, tokens = self._invoke(x, t, causal, need, call)
            slot.store = call.store
            self._refreshed(slot, due, x, t)
            return lp, need, 1, tokens
        if not any(flags):
            lp, tokens = self._windowed(slot.store, x, t, causal, need, self.start)
            slot.since += 1
            return lp, need, 1, tokens
        return self._split(slot, due, x, t, causal, need)

    def _windowed(self, store, x, t, causal, need, start) -> tuple[Tensor, int]:
        if self.mode == "dual":
            call = CacheCall(store, start, self.width)
        else:  # prefix: the window and everything after it, the same count in every row
            n = self.length - int(start.min())
            call = CacheCall(store, torch.full_like(start, self.length - n), n)
        return self._invoke(x, t, causal, need, call)

    def _split(self, slot, due, x, t, causal, need):
        """Refresh the rows ``due`` and run the others windowed: two forwards."""
        rows_r, rows_s = due.nonzero().squeeze(1), (~due).nonzero().squeeze(1)
        sub = slot.store.select(rows_s)
        lp_s, tok_s = self._windowed(sub, x[rows_s], t[rows_s], causal, need[rows_s],
                                     self.start[rows_s])
        slot.store.assign(rows_s, sub)
        call = CacheCall(None, None, self.length)
        lp_r, tok_r = self._invoke(x[rows_r], t[rows_r], causal, need[rows_r], call)
        slot.store.assign(rows_r, call.store)
        slot.since[rows_s] += 1
        self._refreshed(slot, due, x, t)
        order = torch.zeros(need.shape, dtype=torch.long, device=need.device)
        order[need] = torch.arange(int(need.sum()), device=need.device)
        out = torch.empty(int(need.sum()), lp_s.shape[-1], dtype=lp_s.dtype, device=lp_s.device)
        out[order[rows_s][need[rows_s]]] = lp_s
        out[order[rows_r][need[rows_r]]] = lp_r
        return out, need, 2, tok_s + tok_r

    def _refreshed(self, slot: _Slot, rows: Tensor, x: Tensor, t: Tensor) -> None:
        slot.window = torch.where(rows, self.start, slot.window)
        slot.since = torch.where(rows, 1, slot.since)
        slot.x = torch.where(rows[:, None], x, slot.x)
        slot.t = torch.where(rows, t, slot.t)

    def _exact(self, slot, x, t, causal, need, block: int):
        """Recompute from the first stale position to the window's end (block-aligned)."""
        L = self.length
        if slot.store is None:
            stale = torch.zeros_like(self.start)
        else:
            diff = x != slot.x
            if self.time_conditioned:
                diff |= (t != slot.t)[:, None]
            stale = _first_true(diff)
        first = torch.minimum(stale, self.start) // block * block
        end = ((self.start + self.width + block - 1) // block * block).clamp(max=L)
        n = int((end - first).max())  # host read: the positions to run
        start = (end - n).clamp(min=0)
        call = CacheCall(slot.store, start, n)
        lp, tokens = self._invoke(x, t, causal, need, call)
        slot.store = call.store
        pos = torch.arange(L, device=x.device)
        ran = (pos >= start[:, None]) & (pos < start[:, None] + n)
        slot.x = torch.where(ran, x, slot.x).masked_fill(pos >= (start + n)[:, None], -1)
        slot.t = t.clone()
        return lp, need, 1, tokens

    def _invoke(self, x, t, causal, need, call: CacheCall) -> tuple[Tensor, int]:
        lp = self.denoiser.log_probs(x, t, causal=causal, rows=need, cache=call)
        if call.store is None:
            raise RuntimeError(f"{type(self.denoiser).__name__} left the cache store empty")
        n = x.shape[1] if call.start is None else call.length
        return lp, int(call.tokens or x.shape[0] * n)
