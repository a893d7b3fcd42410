"""APD: adaptive parallel decoding (Israel, Van den Broeck, Grover, NeurIPS 2025).

Each round, for every row with accepted prefix p:

1. one denoiser pass over [prefix, MASK ...] gives the marginals q_i; the draft x̃_i ~ q_i is
   drawn for the ``lookahead`` positions after p (M), from uniforms u_i by inverse CDF;
2. one teacher-forced AR pass gives p_AR(· | prefix, x̃_<i);
3. the target is the product of experts π_i ∝ exp(R·log q_i + (1-R)·log p_AR,i) (APD eq. 4,
   R = ``mixture_weight``); y_i is drawn from π_i with the *same* u_i (shared noise);
4. the longest run with x̃_i = y_i is accepted (``accept="argmax"``: x̃_i = argmax π_i, the
   released code's rule), and y is committed at the position after it: at least one token
   per round, and every committed token is a draw from π given the committed prefix.

R = 1 accepts the whole window (the denoiser's parallel draws, M + 1 tokens a round); R = 0
commits exactly the AR model's draws (one AR pass per round, exact AR sampling); in between, a
trade-off. Exact for neither model. Temperature reaches both experts: q_i carries it (with
top-p), and the AR conditional is divided by it too, so π is the tempered product of experts and
R = 0 samples the AR model at that temperature, as the AR model alone does. ``steps`` of the
run is a maximum number of rounds: when a row could not finish otherwise, a round commits at
least ceil(remaining / rounds left) tokens (the draft's, then y), widening the window if
needed. Only ``LeftToRight`` is accepted, after a prefix prompt.
"""

from __future__ import annotations

import time

import torch

from decoding.guides.prefix_ar import LeftToRightLoop, LiveRows, PrefixScorer, gather_rows
from decoding.loop import BatchLoop, check_prefix_prompt
from decoding.sampling import inverse_cdf

RULES = ("shared_noise", "argmax")


class APDGuide(LeftToRightLoop):
    """Draft with the denoiser, accept where the draft agrees with the product of experts.

    Args:
        ar: AR model sharing the denoiser's tokenizer.
        mixture_weight: R in [0, 1], the denoiser's weight in the target.
        lookahead: M >= 1, draft positions per round.
        accept: "shared_noise" (the paper) or "argmax" (the released code).
    """

    def __init__(self, ar, mixture_weight: float = 0.5, lookahead: int = 8,
                 accept: str = "shared_noise"):
        if not 0.0 <= mixture_weight <= 1.0:
            raise ValueError(f"mixture_weight (R) must lie in [0, 1], got {mixture_weight}")
        if not isinstance(lookahead, int) or lookahead < 1:
            raise ValueError(f"lookahead must be a positive integer, got {lookahead!r}")
        if accept not in RULES:
            raise ValueError(f"accept must be one of {RULES}, got {accept!r}")
        self.ar, self.mixture_weight = ar, float(mixture_weight)
        self.lookahead, self.accept = lookahead, accept

    def target(self, log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
        """(n, V) normalised rows -> (n, V) log π = norm(R log q + (1-R) log p)."""
        r = self.mixture_weight
        if r == 0.0:  # 0 * -inf (a top-p cut) must not give NaN
            mix = log_p
        elif r == 1.0:
            mix = log_q
        else:
            mix = r * log_q + (1.0 - r) * log_p
        return torch.log_softmax(mix, dim=-1)

    def run(self, loop: BatchLoop, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) prompt rows -> (B, L) tokens, (B,) rounds per row."""
        check_prefix_prompt(loop.free, type(self).__name__)
        rounds = torch.zeros(x.shape[0], dtype=torch.long)
        live = LiveRows(loop, PrefixScorer(loop.ar, x.shape[0], loop.mask_id), x)
        max_rounds = len(loop.infos)
        for r in range(max_rounds):
            p = live.advance()
            if p is None:
                break
            t0 = time.perf_counter()
            live.x = self._round(loop, live.scorer, live.x, p, max_rounds - r,
                                 loop.infos[r].index)
            rounds[live.rows.cpu()] += 1
            loop.record(r, seconds=time.perf_counter() - t0)
        return live.result(), rounds

    def _round(self, loop: BatchLoop, scorer: PrefixScorer, x, p, rounds_left: int, index: int):
        B, L = x.shape
        dev = x.device
        pos = torch.arange(L, device=dev)
        remaining = L - p
        least = (remaining + rounds_left - 1) // rounds_left  # tokens this round must commit
        width = torch.minimum(torch.maximum(least - 1, torch.full_like(p, self.lookahead)),
                              remaining)
        end = p + width  # draft positions p .. end-1
        window = (pos >= p[:, None]) & (pos < end[:, None])
        stop = (end + 1).clamp(max=L)  # positions needing a target row: p .. end (if < L)
        rows_at = (pos >= p[:, None]) & (pos < stop[:, None])
        marg = loop.marginals(x, loop.row_times(x), index, need=rows_at)
        u = torch.rand(x.shape, dtype=torch.float64, device=dev, generator=loop.generator)
        q = marg.rows(rows_at)  # (n, V) row-major over rows_at
        in_window = window[rows_at]
        draft_tok, _ = inverse_cdf(q[in_window], 1, None, normalized=True,
                                   uniforms=u[window][:, None])
        draft = x.clone()
        draft[window] = draft_tok[:, 0]
        lp = scorer.score(draft, int(stop.max()))
        log_p = torch.log_softmax(gather_rows(lp, scorer.c, rows_at) / marg.temperature, dim=-1)
        pi = self.target(q, log_p)
        y_tok, _ = inverse_cdf(pi, 1, None, normalized=True, uniforms=u[rows_at][:, None])
        y = x.clone()
        y[rows_at] = y_tok[:, 0]
        if self.accept == "argmax":
            best = torch.zeros_like(x)
            best[rows_at] = pi.argmax(-1)
            agree = draft == best
        else:
            agree = draft == y
        mismatch = window & ~agree
        run = torch.where(mismatch.any(1), mismatch.long().argmax(1), end) - p
        n = torch.maximum(run, least - 1)  # draft tokens committed, then y at p + n
        accepted = (pos >= p[:, None]) & (pos < (p + n)[:, None])
        nxt = (pos == (p + n)[:, None]) & (pos < L)
        x = torch.where(accepted, draft, torch.where(nxt, y, x))
        loop.record(index, revealed=int(accepted.sum() + nxt.sum()))
        scorer.keep(int((p + n).min()))  # rows agree with the fed draft before p + n
        return x
