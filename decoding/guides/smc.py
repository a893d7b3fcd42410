"""Sequential Monte Carlo across denoising steps, with the AR model as the twist.

In the spirit of twisted SMC for diffusion (Ou et al. 2025) and self-rewarding SMC (Luo et
al. 2026), with a separate AR model as the target. Each sample runs N particles (batch rows
b*N .. b*N+N-1) through the ordinary step grid with the Coordinator's strategy; values are
proposed position by position from the marginals q (the ``Independent`` draft, temperature
and top-p included). The log weight of a particle gains, after each step,

    Δ log w = Σ_{i newly settled} [ log p_AR(x_i | x_<i) − log q_i(x_i) ],

where a position is *settled* once it and every position before it are revealed (its left
context is known, so the AR model can score it), and q_i is the marginal it was drawn from
(0 for clamped prompt positions, which the target conditions on). When a sample's effective
sample size falls below κN its particles are resampled (systematic or multinomial) and its
weights reset; at the end one particle per sample is drawn by weight.

After the last step every position is settled, so the product of the increments is
p_AR(x0) / Π q: the path's importance weight against the target "AR model's x0, revealed in
the strategy's order". The twist only shapes the intermediate weights, so with the exact AR
model and exact marginals the output tends to exact samples as N grows, at any step count.

EDLM (Xu et al. 2025) is the special case of one step: N candidates, one weight, one draw
(no weights carried across steps). With several steps EDLM resamples a fresh K-candidate set
at every step and forgets the weights; SMC keeps them, so the final draw corrects the whole
trajectory. The position choice must not depend on the values (the weight would need the
selection's probability) and nothing may be remasked: ``Ancestral``, ``LeftToRight`` and
``Blocks`` over them are accepted.
"""

from __future__ import annotations

import time

import torch

from decoding.guides.independent import Independent
from decoding.guides.prefix_ar import PrefixScorer
from decoding.loop import BatchLoop, first_masked
from decoding.protocols import check_vocabularies
from decoding.resampling import METHODS, effective_sample_size, normalized_weights, resample


class SMCGuide:
    """N particles per sample, AR-twisted weights, resampling when the ESS drops.

    Args:
        ar: AR model sharing the denoiser's tokenizer.
        num_particles: N >= 1.
        ess_threshold: κ in [0, 1]; resample a sample's particles when ESS < κN
            (0: never before the end, 1: after every step).
        resampling: "systematic" or "multinomial".
    """

    supports_cache = True  # a denoiser KV cache follows the particles through resampling

    def __init__(self, ar, num_particles: int = 8, ess_threshold: float = 0.5,
                 resampling: str = "systematic"):
        if not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"num_particles must be a positive integer, got {num_particles!r}")
        if not 0.0 <= ess_threshold <= 1.0:
            raise ValueError(f"ess_threshold must lie in [0, 1], got {ess_threshold}")
        if resampling not in METHODS:
            raise ValueError(f"resampling must be one of {METHODS}, got {resampling!r}")
        self.ar, self.num_particles = ar, num_particles
        self.ess_threshold, self.resampling = float(ess_threshold), resampling
        self._independent = Independent()

    def check(self, denoiser) -> None:
        check_vocabularies(denoiser, self.ar)

    def check_strategy(self, strategy) -> None:
        inner = getattr(strategy, "inner", strategy)
        why = None
        if strategy.needs_draft:
            why = "chooses positions from the drafted values"
        elif strategy.remasks:
            why = "remasks decoded positions"
        elif getattr(strategy, "stop_at_eos", False):
            why = "fills positions after an end-of-sequence token"
        if why is not None:
            raise ValueError(f"{type(self).__name__} weighs each step by the proposal of what it "
                             f"commits; {type(strategy).__name__}({type(inner).__name__}) {why}. "
                             "Use strategy=ancestral, left_to_right or blocks over them")

    def needed_rows(self, masked, request, info):
        return self._independent.needed_rows(masked, request, info)

    def propose(self, ctx, generator):
        """Each particle's values: the factorised draft (its log q enters the weight)."""
        return self._independent.propose(ctx, generator)

    def run(self, loop: BatchLoop, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) prompt rows -> (B, L) tokens, (B,) steps per row."""
        B, L = x.shape
        N = self.num_particles
        dev = x.device
        xs = x.repeat_interleave(N, dim=0)
        free = loop.free.repeat_interleave(N, dim=0)
        loop.use_rows(xs, free)
        scorer = PrefixScorer(loop.ar, B * N, loop.mask_id)
        log_w = torch.zeros(B, N, dtype=torch.float64, device=dev)
        log_q = torch.zeros(xs.shape, dtype=torch.float64, device=dev)
        settled = torch.zeros(B * N, dtype=torch.long, device=dev)
        confidence = torch.zeros(xs.shape, dtype=torch.float64, device=dev)
        pos = torch.arange(L, device=dev)
        for info in loop.infos:
            t0 = time.perf_counter()
            xs, confidence, sel, draft = loop.step(info, xs, confidence)
            if draft is not None:
                log_q = torch.where(sel.reveal, draft.log_q, log_q)
            now = first_masked(xs, loop.mask_id)
            if (now > settled).any():
                lp = scorer.score(xs, int(now.max()))
                span = (pos >= settled[:, None]) & (pos < now[:, None])
                lo = scorer.c
                tok = xs[:, lo : lo + lp.shape[1]].clamp(max=lp.shape[2] - 1)
                ar_lp = lp.gather(-1, tok[..., None]).squeeze(-1)
                inc = torch.zeros_like(log_q)
                inc[:, lo : lo + lp.shape[1]] = ar_lp
                inc = torch.where(span, inc - log_q, 0.0).sum(dim=1)
                log_w += inc.view(B, N)
                scorer.keep(int(now.min()))
                settled = now
            weights = normalized_weights(log_w)
            ess = effective_sample_size(weights)
            if not info.is_last and N > 1:
                low = ess < self.ess_threshold * N
                if low.any():
                    idx = resample(weights, N, loop.generator, self.resampling)
                    ident = torch.arange(N, device=dev).expand(B, N)
                    idx = torch.where(low[:, None], idx, ident)
                    flat = (torch.arange(B, device=dev)[:, None] * N + idx).reshape(-1)
                    xs, confidence, log_q = xs[flat], confidence[flat], log_q[flat]
                    settled, free = settled[flat], free[flat]
                    scorer.reorder(flat)
                    loop.use_rows(xs, free, index=flat)
                    log_w = torch.where(low[:, None], 0.0, log_w)
            loop.record(info.index, seconds=time.perf_counter() - t0, ess=ess)
        pick = resample(normalized_weights(log_w), 1, loop.generator, self.resampling)[:, 0]
        out = xs.view(B, N, L)[torch.arange(B, device=dev), pick]
        return out, torch.full((B,), float(len(loop.infos)))
