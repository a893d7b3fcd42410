"""Teacher-forced AR scoring of growing per-row prefixes over one batched KV cache.

Speculative decoding, APD and SMC all need log p_AR(x_i | x_<i) at positions just past each
row's settled prefix, and rows advance at different speeds. One cache serves the batch: it
holds the c tokens every row agrees on (c <= every row's settled prefix); each call feeds the
positions from c to the furthest row's need in one forward (positions a row does not need
are fed as token 0: the model is causal, and the cache is cut back to a valid prefix before
they could matter), then crops to the new common prefix. So no token is fed twice for the
slowest row, and one call is one AR forward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from decoding.loop import first_masked
from decoding.protocols import check_vocabularies
from decoding.strategies.left_to_right import LeftToRight


class PrefixScorer:
    """Owns one batch's AR cache.

    Args:
        ar: ``decoding.protocols.ARModel`` (incremental API: start, extend, crop, reorder),
            normally the Coordinator's counting handle (``BatchLoop.ar``).
        batch_size: B rows.
        mask_id: the denoiser's mask id (never fed: replaced by token 0 where not needed).
    """

    def __init__(self, ar, batch_size: int, mask_id: int):
        self.ar, self.mask_id = ar, mask_id
        pred, self.cache = ar.start(batch_size)
        self.pred = pred.to(torch.float64)  # (B, V) log p(x_c | x_<c)
        self.c = 0
        self._rows: Tensor | None = None

    def score(self, x: Tensor, end: int) -> Tensor:
        """AR log-probs at positions c .. end-1 -> (B, end - c, V) float64.

        Row j is log p(x_{c+j} | x_<c+j). ``x`` (B, L) must hold real tokens, in every row
        whose result at position i is used, at all positions before i.
        """
        n = end - self.c
        if n <= 0:
            raise ValueError(f"nothing to score: end {end} <= cached prefix {self.c}")
        rows = [self.pred[:, None]]
        if n > 1:
            seg = x[:, self.c : end - 1]
            seg = seg.masked_fill(seg == self.mask_id, 0)
            out = self.ar.extend(self.cache, seg).to(torch.float64)
            rows.append(out)
        self._rows = torch.cat(rows, dim=1)
        return self._rows

    def keep(self, length: int) -> None:
        """After ``score``: keep the first ``length`` tokens, a prefix every row agrees on
        with the x it was scored on (c <= length < end)."""
        fed = self.c + self._rows.shape[1] - 1
        length = min(length, fed)
        if length < self.c:
            raise ValueError(f"cannot keep {length} tokens: {self.c} are already settled")
        self.pred = self._rows[:, length - self.c]
        self.ar.crop(self.cache, length)
        self.c = length
        self._rows = None

    def reorder(self, index: Tensor) -> None:
        """Keep (or repeat) rows ``index`` (B',) long."""
        self.ar.reorder(self.cache, index)
        self.pred = self.pred[index]


def gather_rows(rows: Tensor, c: int, where: Tensor) -> Tensor:
    """Rows of ``score``'s output at the True positions of (B, L) ``where`` -> (n, V),
    row-major (every True position must lie in c .. c + rows.shape[1] - 1)."""
    b, i = where.nonzero(as_tuple=True)
    return rows[b, i - c]


class LiveRows:
    """The rows of a left-to-right batch that are still generating.

    A row whose every position is revealed is copied out and dropped from the batch, the AR
    cache and the loop's denoiser batch, so later rounds cost nothing for it.

    Args:
        loop: the batch's ``decoding.loop.BatchLoop``.
        scorer: the batch's ``PrefixScorer``.
        x: (B, L) the prompt rows.
    """

    def __init__(self, loop, scorer: PrefixScorer, x: Tensor):
        self.loop, self.scorer, self.x = loop, scorer, x
        self.out = x.clone()
        self.rows = torch.arange(x.shape[0], device=x.device)  # output row of each live row
        self.free = loop.free

    def advance(self) -> Tensor | None:
        """Retire finished rows -> (B',) first masked position of each live row, or None
        when no row is left."""
        p = first_masked(self.x, self.loop.mask_id)
        done = p >= self.x.shape[1]
        if done.any():
            self.out[self.rows[done]] = self.x[done]
            keep = (~done).nonzero().squeeze(1)
            self.rows, self.x, self.free, p = (self.rows[keep], self.x[keep], self.free[keep],
                                               p[keep])
            if keep.numel() == 0:
                return None
            self.scorer.reorder(keep)
            self.loop.use_rows(self.x, self.free)
        return p

    def result(self) -> Tensor:
        """(B, L) tokens: the retired rows and the live ones as they stand."""
        self.out[self.rows] = self.x
        return self.out


class LeftToRightLoop:
    """Base of the guides that commit a settled prefix round by round through their own loop
    (``run``): speculative decoding and APD. Subclasses set ``self.ar``."""

    def check(self, denoiser) -> None:
        check_vocabularies(denoiser, self.ar)

    def check_strategy(self, strategy) -> None:
        if not isinstance(strategy, LeftToRight):
            raise ValueError(f"{type(self).__name__} commits tokens left to right and needs "
                             f"strategy=left_to_right (LeftToRight), got "
                             f"{type(strategy).__name__}")

    def propose(self, ctx, generator):
        raise RuntimeError(f"{type(self).__name__} runs its own loop (run), not per-step drafts")
