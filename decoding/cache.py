"""A denoiser KV cache across denoising steps: the protocol between the engine and a denoiser.

A semi-autoregressive strategy (``decoding.strategies.Blocks``) commits positions inside one
block at a time, so most of a step's forward recomputes keys and values of positions that
have not changed. With a cache the Coordinator asks the denoiser for the rows of the current
block only, and the denoiser reuses the stored keys and values of everything else:

* ``prefix`` (Fast-dLLM's prefix cache, Wu et al. 2025): the block and everything after it are
  recomputed; the positions before the block are read from the cache;
* ``dual`` (Fast-dLLM's dual cache): only the block is recomputed; the keys and values of the
  prefix *and* of the suffix come from the cache.

The store is rebuilt ("refreshed": one forward over every position, whose rows serve the step)
at the first step of each block and, optionally, every ``refresh_every`` calls. For a model
with bidirectional attention this is the authors' approximation: the cached keys and values
are those of the sequence at the last refresh. Refreshed at every call it is the uncached
forward itself. Attention that never looks forward makes the cache exact instead: under
BD3-LM's block-causal attention (Arriola et al. 2025) and under the causal attention of
DCD's prefix-only pass, the keys and values of a position depend on its own block and the
earlier ones only, so the engine recomputes from the first position that changed since it was
stored (at the block start: the block just finished, as BD3-LM's ``store_kv`` pass does) and
never needs a full refresh.

What a denoiser declares and takes:

* ``supports_cache``: the modes it implements, e.g. ``("prefix", "dual")`` (absent or ``()``:
  none; a Coordinator built with another mode refuses it before any model runs);
* ``cache_block(causal) -> int | None``: ``None`` when that call's attention is bidirectional
  (approximate cache), ``k`` when a query at position p sees only keys j with
  ``j // k <= p // k`` (1: causal; BD3-LM: its block size), which makes the cache exact;
* ``log_probs(x, t, causal=False, rows=None, cache=call)`` with a ``CacheCall``: compute the
  positions ``call.positions()`` from ``x`` (and any others the model needs, e.g. the position
  before them when the logits are shifted), write their keys and values into ``call.store``
  (creating it when it is None), attend with every other key read from the store, and return
  the packed rows ``rows`` (which lie among those positions). ``call.start`` None asks for
  every position: a refresh. The denoiser sets ``call.tokens`` to the positions it ran.

Keys and values are stored per layer as tensors whose first dimension is the batch row
(``KVStore``), so the engine can select, merge and reorder rows (SMC's resampling) without
knowing the layout; the helpers below (``fresh_positions``, ``key_mask``, ``rows_at``) are for
denoisers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from decoding.checks import device_check

CACHE_MODES = ("none", "prefix", "dual")


class KVStore:
    """Keys and values of every position of one batch, as a denoiser wrote them.

    ``layers``: one list of tensors per layer (keys and values, usually (B, heads, L, d)),
    each with the batch row as its first dimension; what follows is the denoiser's layout.
    """

    def __init__(self, layers: list[list[Tensor]]):
        self.layers = [list(kv) for kv in layers]

    @classmethod
    def zeros(cls, n_layers: int, shape: tuple[int, ...], dtype, device,
              per_layer: int = 2) -> KVStore:
        """A store of ``n_layers`` x ``per_layer`` zero tensors of ``shape``."""
        return cls([[torch.zeros(shape, dtype=dtype, device=device) for _ in range(per_layer)]
                    for _ in range(n_layers)])

    @property
    def batch_size(self) -> int:
        return self.layers[0][0].shape[0]

    def select(self, index: Tensor) -> KVStore:
        """A new store holding the rows ``index`` (B',) long (copies)."""
        return KVStore([[t.index_select(0, index) for t in kv] for kv in self.layers])

    def assign(self, index: Tensor, other: KVStore) -> None:
        """Overwrite the rows ``index`` (B',) with ``other``'s rows, in order."""
        for mine, theirs in zip(self.layers, other.layers):
            for a, b in zip(mine, theirs):
                a.index_copy_(0, index, b)

    def reorder(self, index: Tensor) -> None:
        """Replace the rows by ``rows[index]`` (selects and repeats; in place)."""
        self.layers = self.select(index).layers


@dataclass
class CacheCall:
    """One cached denoiser call; the engine fills it, the denoiser reads and writes it.

    Attributes:
        store: the keys and values so far (None: nothing stored; the denoiser creates it).
        start: (B,) long, the first position to recompute in each row; None: every position
            (a refresh).
        length: how many positions each row recomputes (from ``start``; all of them lie in
            ``0..L-1``).
        tokens: set by the denoiser, the positions it ran through the network (all rows).
    """

    store: KVStore | None
    start: Tensor | None
    length: int
    tokens: int = 0

    def positions(self, batch: int, length: int, device, left: int = 0) -> Tensor:
        """(B, n) long positions to recompute, ascending, widened by ``left`` positions to the
        left where the model needs them (a shifted head reads the hidden state at i-1),
        clipped to ``0..length-1``."""
        n = length if self.start is None else self.length
        start = (torch.zeros(batch, dtype=torch.long, device=device) if self.start is None
                 else self.start.to(device))
        return fresh_positions(start, n, length, left)


def fresh_positions(start: Tensor, n: int, length: int, left: int = 0) -> Tensor:
    """(B, n') ascending positions covering [start - left, start + n) in each row, inside
    ``0..length-1`` (n' = min(n + left, length))."""
    width = min(n + left, length)
    first = (start - left).clamp(min=0).clamp(max=length - width)
    return first[:, None] + torch.arange(width, device=start.device)


def key_mask(pos: Tensor, length: int, causal: bool, block: int | None) -> Tensor | None:
    """(B, 1, n, L) bool, True where the query at ``pos`` may attend key j (None: all keys).

    ``causal``: j <= p; ``block`` k: j // k <= p // k (block-causal); both: the stricter.
    """
    if not causal and block is None:
        return None
    keys = torch.arange(length, device=pos.device)
    q = pos[:, :, None]
    allowed = torch.ones(*pos.shape, length, dtype=torch.bool, device=pos.device)
    if causal:
        allowed &= keys <= q
    if block is not None:
        allowed &= (keys // block) <= (q // block)
    return allowed[:, None]


def rows_at(rows: Tensor | None, pos: Tensor) -> Tensor:
    """The wanted rows among the recomputed positions: (B, L) bool -> (B, n) bool (None: all
    of them). Fails loudly when a wanted row is not recomputed."""
    if rows is None:
        return torch.ones(pos.shape, dtype=torch.bool, device=pos.device)
    sub = rows.gather(1, pos)
    device_check(sub.sum() == rows.sum(), "a cached call was asked for rows outside the "
                 "positions it recomputes", RuntimeError)
    return sub


def check_cache(mode: str, refresh_every: int | None, denoiser, strategy, guide) -> None:
    """Refuse, before any model runs, a cache the run cannot use (ValueError)."""
    if mode not in CACHE_MODES:
        raise ValueError(f"cache must be one of {CACHE_MODES}, got {mode!r}")
    if refresh_every is not None and (isinstance(refresh_every, bool)
                                      or not isinstance(refresh_every, int) or refresh_every < 1):
        raise ValueError(f"refresh_every must be a positive integer or None, got "
                         f"{refresh_every!r}")
    if mode == "none":
        return
    modes = tuple(getattr(denoiser, "supports_cache", ()) or ())
    if mode not in modes:
        have = f"supports {modes}" if modes else "has no KV cache (supports_cache is empty)"
        raise ValueError(f"cache={mode}: {type(denoiser).__name__} {have}; use cache=none"
                         + (f" or one of {modes}" if modes else ""))
    if not getattr(strategy, "windowed", False):
        raise ValueError(f"cache={mode} needs a strategy that commits inside one block at a "
                         f"time (strategy=blocks); {type(strategy).__name__} commits anywhere "
                         "in the sequence")
    if strategy.needs_mass:
        raise ValueError(f"cache={mode}: {type(strategy).__name__} reveals by the score mass "
                         "of every masked row, which a cached call does not compute")
    supported = getattr(guide, "supports_cache", not hasattr(guide, "run"))
    if not supported:
        why = getattr(guide, "cache_refusal", "it drives its own loop over windows of its own")
        raise ValueError(f"cache={mode}: guide {type(guide).__name__} cannot use a denoiser "
                         f"cache ({why}); use cache=none")
    if hasattr(guide, "check_cache"):
        guide.check_cache(strategy)


def window_end(window: Tensor) -> int:
    """One past the last position of any row's window ((B, L) bool, ``GuideContext.window``)."""
    cols = window.any(dim=0).nonzero()
    return int(cols[-1]) + 1 if cols.numel() else 0


def refuse_adaptive(guide, strategy) -> None:
    """For guides whose cached path needs one block for the whole batch: an adaptive inner
    strategy moves each row to its next block at its own step."""
    if getattr(strategy, "adaptive", False):
        raise ValueError(f"{type(guide).__name__} with a denoiser cache drafts the current "
                         "block of every row up to one end, so every row must be in the same "
                         f"block; {type(strategy).__name__} with an adaptive inner strategy "
                         "moves rows on at their own steps (use cache=none)")
