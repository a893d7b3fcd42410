"""Semi-autoregressive blocks (Arriola et al. 2025, BD3-LM; Nie et al. 2025, LLaDA).

The sequence is split into blocks of ``block_length`` positions, generated left to right: from
position 0 (``start="sequence"``: BD3-LM, whose blocks are the model's own), or from the first
position that is generated (``start="generation"``: after the prompt, as LLaDA's and
Fast-dLLM's blocks start after theirs, so that no step goes to a block of prompt); the steps
are shared out over the blocks (earlier blocks get the remainder), and inside the
current block an inner strategy runs with its own local time grid from 1 to 0. With
``stop_at_eos``, once a finished block holds an end-of-sequence token, every position after
the first one is overwritten with that token and never generated (variable-length output;
an EOS drawn in the last block is left as drawn: metrics count up to the first EOS).

With an adaptive inner strategy (``Threshold``: how many positions a step commits depends on
the data), each row works on its own first unfinished block and moves to the next one as soon
as it is complete, so the steps a block saves go to the later ones; a block still incomplete
at the last step of its share of ``steps`` is completed at that step (``steps`` is a cap). The
inner strategy then sees the run's own step.
"""

from __future__ import annotations

import torch

from decoding.strategies.ancestral import Ancestral
from decoding.strategies.base import Strategy
from decoding.types import Selection, StepInfo, StepState


class Blocks(Strategy):
    """Run ``inner`` block by block, left to right."""

    windowed = True  # every step commits inside the current block (``cache_window``)

    def __init__(self, block_length: int, inner: Strategy | None = None,
                 stop_at_eos: bool = False, eos_id: int | None = None,
                 start: str = "sequence"):
        if block_length < 1:
            raise ValueError(f"block_length must be >= 1, got {block_length}")
        if start not in ("sequence", "generation"):
            raise ValueError(f"Blocks start must be 'sequence' or 'generation', got {start!r}")
        self.start = start
        if stop_at_eos and eos_id is None:
            raise ValueError("Blocks(stop_at_eos=True) needs eos_id (from the tokenizer)")
        self.block_length = block_length
        self.inner = inner if inner is not None else Ancestral()
        self.stop_at_eos, self.eos_id = stop_at_eos, eos_id
        self.needs_draft = self.inner.needs_draft
        self.remasks = self.inner.remasks
        self.adaptive = self.inner.adaptive
        self._seen: tuple[torch.Tensor, int] | None = None  # (free mask, its first position)

    def _offset(self, state: StepState) -> int:
        """Where the blocks start: 0, or the first position any row generates."""
        if self.start == "sequence":
            return 0
        if self._seen is None or self._seen[0] is not state.free:
            free = state.free.any(dim=0)
            self._seen = (state.free, int(free.long().argmax()) if bool(free.any()) else 0)
        return self._seen[1]

    def num_blocks(self, length: int) -> int:
        return -(-length // self.block_length)

    def check(self, steps: int, length: int) -> None:
        nb = self.num_blocks(length)
        if steps < nb:
            raise ValueError(f"Blocks needs at least one step per block: {nb} blocks of "
                             f"{self.block_length} for length {length}, but steps={steps}")
        self.inner.check(-(-steps // nb), min(self.block_length, length))

    def _locate(self, info: StepInfo, length: int) -> tuple[int, StepInfo]:
        """Block of this step and the step's place on that block's own time grid."""
        nb = self.num_blocks(length)
        base, extra = divmod(info.num_steps, nb)
        sizes = [base + (b < extra) for b in range(nb)]
        start = 0
        for b, n in enumerate(sizes):
            if info.index < start + n:
                j = info.index - start
                return b, StepInfo(j, n, 1.0 - j / n, 1.0 - (j + 1) / n, info.schedule)
            start += n
        raise ValueError(f"step {info.index} is past the last block")

    def _after_eos(self, state: StepState, done_until: int | torch.Tensor) -> torch.Tensor:
        """(B, L) bool: generated positions after a row's first EOS in its finished blocks
        (those before ``done_until``, one for the batch or (B,) per row)."""
        L = state.x.shape[1]
        pos = torch.arange(L, device=state.x.device)
        until = done_until[:, None] if isinstance(done_until, torch.Tensor) else done_until
        is_eos = (state.x == self.eos_id) & state.free & (pos[None, :] < until)
        first = torch.where(is_eos.any(dim=1), is_eos.float().argmax(dim=1), L)
        return state.free & (pos[None, :] > first[:, None])

    def _row_blocks(self, state: StepState) -> torch.Tensor:
        """(B,) long: each row's first block with a masked position (the block count if none)."""
        m = state.masked
        first = torch.where(m.any(dim=1), m.long().argmax(dim=1), m.shape[1])
        return (first - self._offset(state)).clamp(min=0) // self.block_length

    def _current(self, info: StepInfo, state: StepState):
        """The block of each row (int, or (B,) adaptive), its positions (B, L) and the
        inner strategy's step."""
        off = self._offset(state)
        span = state.x.shape[1] - off
        if not self.adaptive:
            b, local = self._locate(info, span)
            return b, self._in_block(b, state), local
        b = self._row_blocks(state)
        rel = torch.arange(span, device=state.x.device)
        in_block = torch.zeros_like(state.masked)
        in_block[:, off:] = (rel[None, :] // self.block_length) == b[:, None]
        return b, in_block, info

    def _deadline(self, info: StepInfo, b: torch.Tensor, span: int) -> torch.Tensor:
        """(B,) bool: rows whose block ends its share of the steps at this step."""
        nb = self.num_blocks(span)
        base, extra = divmod(info.num_steps, nb)
        ends = torch.tensor([base + (k < extra) for k in range(nb)]).cumsum(0) - 1
        return info.index >= ends.to(b.device)[b.clamp(max=nb - 1)]

    def cache_window(self, info: StepInfo, state: StepState) -> tuple[torch.Tensor, int]:
        """Each row's current block: ((B,) first position, ``block_length``)."""
        b, _, _ = self._current(info, state)
        if not isinstance(b, torch.Tensor):
            b = torch.full((state.x.shape[0],), b, dtype=torch.long, device=state.x.device)
        return self._offset(state) + b * self.block_length, self.block_length

    def draft_region(self, info: StepInfo, state: StepState) -> torch.Tensor:
        b, in_block, _ = self._current(info, state)
        region = state.masked & in_block
        if self.stop_at_eos:
            region &= ~self._after_eos(state, self._offset(state) + b * self.block_length)
        return region

    def _in_block(self, b: int, state: StepState) -> torch.Tensor:
        pos = torch.arange(state.x.shape[1], device=state.x.device)
        lo = self._offset(state) + b * self.block_length
        return ((pos >= lo) & (pos < lo + self.block_length)).expand_as(state.masked)

    def select(self, info: StepInfo, state: StepState, generator: torch.Generator) -> Selection:
        b, in_block, local = self._current(info, state)
        fill = None
        masked = state.masked
        if self.stop_at_eos:
            fill = self._after_eos(state, self._offset(state) + b * self.block_length)
            masked = masked & ~fill
        inner_state = StepState(
            x=state.x, masked=masked & in_block, free=state.free & in_block,
            confidence=state.confidence, marginals=state.marginals, draft=state.draft,
            draft_log_q=state.draft_log_q)
        sel = self.inner.select(local, inner_state, generator)
        reveal = sel.reveal & in_block
        if self.adaptive:  # a block at the end of its share is completed now
            due = self._deadline(info, b, state.x.shape[1] - self._offset(state))
            reveal = reveal | (inner_state.masked & due[:, None])
        remask = None if sel.remask is None else sel.remask & in_block
        return Selection(reveal=reveal, remask=remask, fill=fill,
                         fill_value=self.eos_id if fill is not None else None)
