"""Left-to-right copula drafting with an AR cache kept across steps (DCD, Liu et al. 2025).

Masked position i is drawn from the AR model tilted by the denoiser's log-ratio (DCD eq. 9):

    r_i(c) ∝ p_AR(c | x̃_<i) · exp(β · V[i, c]),
    V[i, c] = log p_dm(c | x_t) - log p_dm(c | x_t^{<i}),

the bidirectional marginal over the prefix-only (causal) one: V carries what the suffix says
about position i, which the AR model cannot see. Known positions are fed as they are.

Temperature and top-p reach both passes alike: the causal row gets the same temperature and
is restricted to, and renormalised over, the bidirectional row's nucleus, so V is the log-ratio
divided by the temperature. The AR model's conditional is divided by it too, so the draw is the
tempered copula step, r_i^(1/T) renormalised: where position i has no right context (the two
rows are equal) V is 0 on the nucleus, and the draft is the AR model at temperature T
restricted to it, as the AR model alone samples at that temperature. (The authors' code applies
neither transform to either pass.)

First token (``first_token``): ``"bos"`` draws x̃_0 like every other position, from the AR
model's p(· | BOS) tilted by V[0]; ``"marginal"`` draws it from the bidirectional marginal
alone, as the authors' code does. The AR model still reads its BOS before x̃_0 afterwards
(the incremental ``ARModel`` API always starts from BOS); their code feeds no BOS at all.

A finite-context AR model (``context`` c: it sees only the c tokens before position i) cannot
supply the prefix beyond its window, so the causal pass must not remove that part either: it
then runs on x_t with every position more than c before the row's first masked position s
hidden as well (``local_hide``). V then carries what the denoiser sees beyond the AR model's
window, far prefix included, and the draft tends to the exact posterior as steps shrink to one
token. The window is anchored at s, so it is exact for the first drafted position and, for
positions further right, hides less than their own window would (never double-counting).
With the whole-prefix rule (c = None) V carries only the suffix, and a short-context AR model's
draft ignores whatever of the prefix lies beyond its window.

The cache holds the tokens fed so far. At each step it is cut back to the longest prefix that
is still known in every row and unchanged, so with left-to-right unmasking nothing is ever fed
twice and the AR model decodes L tokens in total.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from decoding.loop import first_true
from decoding.sampling import Rows, inverse_cdf
from decoding.types import GuideContext

LOG_FLOOR = -69.0  # log(1e-30): a causal log-prob of -inf must not turn V into +inf
FIRST_TOKEN = ("bos", "marginal")


def local_hide(masked: Tensor, context: int) -> Tensor:
    """(B, L) bool: the positions more than ``context`` before each row's first masked one
    (none in a row without masked positions)."""
    pos = torch.arange(masked.shape[1], device=masked.device)
    hide = pos[None, :] < (first_true(masked) - context)[:, None]
    return hide & masked.any(dim=1, keepdim=True)


def log_ratio(bi: Tensor, causal: Tensor, temperature: float = 1.0) -> Tensor:
    """V = log q(c | x_t) - log q(c | x_t^{<i}) for (n, V) rows -> (n, V) float64.

    ``bi``: the bidirectional rows after temperature/top-p (normalised log-probs, -inf outside
    the nucleus); ``causal``: the raw causal log-probs. The causal rows get the same
    temperature and the bidirectional nucleus, renormalised; V is -inf outside the nucleus.
    """
    ca = causal.to(torch.float64)
    keep = torch.isfinite(bi)
    if temperature != 1.0 or not keep.all():  # else already normalised (the protocol's rows)
        ca = torch.log_softmax((ca / temperature).masked_fill(~keep, -torch.inf), dim=-1)
    return torch.where(keep, bi - ca.clamp_min(LOG_FLOOR), -torch.inf)


@dataclass
class DraftOut:
    """Drafts of shape (B*K, L) (row b*K+j is candidate j of row b), with per-row sums of the
    draft's log-probability (log_r) and of the AR log-likelihood (log_ar) from the first
    position that differs between candidates onwards."""

    tokens: Tensor
    log_r: Tensor
    log_ar: Tensor


class CopulaDrafter:
    """Owns the AR cache of one batch; ``reset`` at the start of every batch.

    Every AR forward goes through the engine's counting handle ``ctx.ar`` (the same model as
    ``ar``); only the free cache edits use ``ar`` directly.
    """

    def __init__(self, ar, beta: float = 1.0, first_token: str = "bos",
                 context: int | None = None):
        if first_token not in FIRST_TOKEN:
            raise ValueError(f"first_token must be one of {FIRST_TOKEN}, got {first_token!r}")
        if context is not None and context < 1:
            raise ValueError(f"context must be >= 1 token or None, got {context}")
        self.ar, self.beta, self.first_token, self.context = ar, beta, first_token, context
        self.reset()

    def _causal(self, ctx: GuideContext) -> Rows:
        hide = None if self.context is None else local_hide(ctx.masked, self.context)
        if ctx.causal_rows is not None:
            return ctx.causal_rows(hide)
        return Rows(ctx.causal_log_probs(hide))

    def reset(self) -> None:
        self.cache, self.fed, self.nxt = None, None, None

    def _position(self, ar, x: Tensor, masked: Tensor) -> int:
        """Cut the cache back to the still-valid prefix; returns its length."""
        B, L = x.shape
        if self.cache is not None and self.fed.shape[0] == B:
            n = self.fed.shape[1]
            ok = (~masked[:, :n] & (x[:, :n] == self.fed)).all(dim=0)
            p = int(ok.long().cumprod(0).sum()) if n else 0
        else:
            self.cache, p = None, 0
        if self.cache is not None and p == self.fed.shape[1]:
            return p
        if p == 0:  # a fresh cache: one forward over the BOS context
            self.nxt, self.cache = ar.start(B)
            self.nxt = self.nxt.to(torch.float64)
        else:
            ar.crop(self.cache, p - 1)
            self.nxt = ar.extend(self.cache, x[:, p - 1 : p])[:, -1].to(torch.float64)
        self.fed = x[:, :p].clone()
        return p

    def draft(self, ctx: GuideContext, end: int, generator: torch.Generator, k: int = 1,
              score_tail: bool = False) -> DraftOut:
        """Draft every masked position before ``end`` for k candidates per row.

        ``score_tail``: also feed the known positions up to ``end`` so that ``log_ar`` covers
        every position (needed by the importance correction, not by plain DCD).
        """
        x, masked, ar = ctx.x, ctx.masked, ctx.ar
        B = x.shape[0]
        p = self._position(ar, x, masked)
        if k > 1:
            rep = torch.arange(B, device=x.device).repeat_interleave(k)
            ar.reorder(self.cache, rep)
            self.nxt, self.fed = self.nxt[rep], self.fed[rep]
            x, masked = x[rep], masked[rep]
        else:
            rep = None
        tokens = x.clone()
        log_r = torch.zeros(B * k, dtype=torch.float64, device=x.device)
        log_ar = torch.zeros_like(log_r)
        causal = None
        if masked[:, p:end].any():
            causal = self._causal(ctx)

        def flush(a: int, b: int) -> None:
            """Feed positions a..b-1 (scoring them under the AR model); nxt -> dist at b."""
            if b <= a:
                return
            seg = tokens[:, a:b]
            out = ar.extend(self.cache, seg).to(torch.float64)
            dists = torch.cat([self.nxt[:, None], out[:, :-1]], dim=1)
            log_ar.add_(dists.gather(-1, seg[..., None]).squeeze(-1).sum(dim=1))
            self.nxt = out[:, -1]
            self.fed = torch.cat([self.fed, seg], dim=1)

        a = p
        for i in range(p, end):
            rows = masked[:, i]
            if not rows.any():
                continue
            flush(a, i)
            a = i
            base = rows if rep is None else ctx.masked[:, i]
            where = torch.zeros_like(ctx.masked)
            where[:, i] = base
            bi = ctx.marginals.rows(where)
            if i == 0 and self.first_token == "marginal":
                logits = bi if rep is None else bi.repeat_interleave(k, dim=0)
            else:
                tilt = log_ratio(bi, causal[where], ctx.marginals.temperature)
                if rep is not None:
                    tilt = tilt.repeat_interleave(k, dim=0)
                logits = self.nxt[rows] / ctx.marginals.temperature + self.beta * tilt
            draw, lr = inverse_cdf(logits, 1, generator)
            tokens[rows, i] = draw[:, 0]
            log_r[rows] += lr[:, 0]
        if score_tail and end > p:
            flush(a, end - 1)
            log_ar.add_(self.nxt.gather(-1, tokens[:, end - 1 : end])[:, 0])
        return DraftOut(tokens, log_r, log_ar)

    def keep(self, index: Tensor) -> None:
        """Keep only the cache rows ``index`` (B,) after choosing one candidate per row."""
        self.ar.reorder(self.cache, index)
        self.nxt, self.fed = self.nxt[index], self.fed[index]
