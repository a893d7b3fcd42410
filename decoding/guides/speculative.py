"""Speculative decoding with the denoiser as drafter: lossless with respect to the AR model.

SpecDiff (Christopher et al., NAACL 2025), with the acceptance rule of speculative sampling
(Leviathan et al. 2023, alg. 1; Chen et al. 2023). Each round, for every row:

1. the denoiser drafts the window of the next γ positions after the accepted prefix p, in
   ``steps`` parallel denoising passes over [prefix, MASK ...] that reveal the window left
   to right (the Coordinator's ``LeftToRight`` strategy decides how many per pass); each
   draft token x̃_i is drawn from q_i, the marginal of its pass (temperature/top-p included);
2. the AR model scores prefix + draft in one teacher-forced pass: p_i = p_AR(· | x̃_<i);
3. left to right, x̃_i is accepted with probability min(1, p_i(x̃_i) / q_i(x̃_i)); at the first
   rejection a token is drawn from the residual norm(max(0, p_i - q_i)) and the round ends;
   if the whole window is accepted, one more token is drawn from p at the next position.

Whatever q is, each committed token is distributed as p_AR(· | committed prefix), so the
output is exactly the AR model's distribution. That needs q_i to be the law of x̃_i given
the draft to its left: true when passes reveal the window left to right (a token is drawn
given the earlier passes and independently of its own pass), not for a random order. Hence
only ``LeftToRight`` is accepted. Generation is left to right after a prefix prompt; infill
prompts are refused.
"""

from __future__ import annotations

import time

import torch

from decoding.guides.prefix_ar import LeftToRightLoop, LiveRows, PrefixScorer, gather_rows
from decoding.loop import BatchLoop, check_prefix_prompt
from decoding.sampling import inverse_cdf
from decoding.types import StepState


class SpeculativeGuide(LeftToRightLoop):
    """Draft γ tokens with the denoiser, verify them with the AR model.

    Args:
        ar: AR model sharing the denoiser's tokenizer (``decoding.protocols.ARModel``).
        draft_length: γ >= 1, window size. ``steps`` of the run is the number of parallel
            denoising passes that draft each window (1: one pass).
    """

    def __init__(self, ar, draft_length: int = 4):
        if not isinstance(draft_length, int) or draft_length < 1:
            raise ValueError(f"draft_length must be a positive integer, got {draft_length!r}")
        self.ar, self.draft_length = ar, draft_length

    def run(self, loop: BatchLoop, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate one batch: (B, L) prompt rows -> (B, L) tokens, (B,) rounds per row."""
        check_prefix_prompt(loop.free, type(self).__name__)
        rounds = torch.zeros(x.shape[0], dtype=torch.long)
        live = LiveRows(loop, PrefixScorer(loop.ar, x.shape[0], loop.mask_id), x)
        while (p := live.advance()) is not None:
            t0 = time.perf_counter()
            live.x = self._round(loop, live.scorer, live.x, p)
            rounds[live.rows.cpu()] += 1
            loop.record(len(loop.infos) - 1, seconds=time.perf_counter() - t0)
        return live.result(), rounds

    def _draft(self, loop: BatchLoop, x, window):
        """Reveal the window left to right in ``steps`` passes -> draft, log q, pass index,
        and the passes' marginals."""
        draft = x.clone()
        log_q = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
        drawn_at = torch.full(x.shape, -1, dtype=torch.long, device=x.device)
        passes = {}
        zeros = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
        for info in loop.infos:
            masked = window & (draft == loop.mask_id)
            if not masked.any():
                break
            state = StepState(x=draft, masked=masked, free=window, confidence=zeros)
            reveal = loop.strategy.select(info, state, loop.generator).reveal & masked
            if not reveal.any():
                continue
            marg = loop.marginals(draft, loop.row_times(draft), info.index, need=reveal)
            tokens, lq = marg.sample(reveal, loop.generator)
            draft = torch.where(reveal, tokens[0], draft)
            log_q = torch.where(reveal, lq[0], log_q)
            drawn_at[reveal] = info.index
            passes[info.index] = marg
        return draft, log_q, drawn_at, passes

    def _round(self, loop: BatchLoop, scorer: PrefixScorer, x, p):
        B, L = x.shape
        pos = torch.arange(L, device=x.device)
        end = (p + self.draft_length).clamp(max=L)  # window is p .. end-1
        window = (pos >= p[:, None]) & (pos < end[:, None])
        draft, log_q, drawn_at, passes = self._draft(loop, x, window)
        # AR predictions at p .. end (the bonus position), one teacher-forced pass.
        need = (end + 1).clamp(max=L)
        lp = scorer.score(draft, int(need.max()))
        c = scorer.c
        log_p = torch.zeros_like(log_q)
        p_rows = torch.log_softmax(gather_rows(lp, c, window), dim=-1)
        log_p[window] = p_rows.gather(1, draft[window][:, None]).squeeze(1)
        u = torch.rand(x.shape, dtype=torch.float64, device=x.device, generator=loop.generator)
        reject = window & (u.log() >= log_p - log_q)
        first = torch.where(reject.any(1), reject.long().argmax(1), end)  # first rejection
        # The token after the accepted run: residual at a rejection, else a bonus draw.
        at = first.clamp(max=L - 1)
        has_next = first < L
        spot = torch.zeros_like(window)
        spot[torch.arange(B, device=x.device), at] = has_next
        nxt = torch.log_softmax(gather_rows(lp, c, spot), dim=-1)  # p at the spot, row-major
        rejected = reject.any(1)
        if rejected.any():
            nxt = self._residual(nxt, spot & rejected[:, None], has_next, drawn_at, passes)
        draw, _ = inverse_cdf(nxt, 1, loop.generator)
        accepted = pos[None, :] < first[:, None]
        x = torch.where(accepted, draft, x)
        x[spot] = draw[:, 0]
        loop.record(len(loop.infos) - 1, revealed=int(accepted.sum() + spot.sum()))
        scorer.keep(int(first.min()))  # row b agrees with the fed draft before ``first``
        return x

    @staticmethod
    def _residual(nxt, spot_rej, has_next, drawn_at, passes):
        """Replace p by norm(max(0, p - q)) on the rows of ``nxt`` that follow a rejection
        (``nxt`` row j belongs to batch row ``has_next.nonzero()[j]``)."""
        owner = has_next.nonzero().squeeze(1)
        q_rows = torch.zeros_like(nxt)
        for k, marg in passes.items():
            where = spot_rej & (drawn_at == k)
            if where.any():
                q_rows[torch.searchsorted(owner, where.any(1).nonzero().squeeze(1))] = \
                    marg.rows(where)
        sub = torch.searchsorted(owner, spot_rej.any(1).nonzero().squeeze(1))
        resid = (nxt[sub].exp() - q_rows[sub].exp()).clamp(min=0.0)
        empty = resid.sum(1, keepdim=True) <= 0  # p == q: a rejection had probability 0
        nxt = nxt.clone()
        nxt[sub] = torch.where(empty, nxt[sub], resid.log())
        return nxt
