"""EDLM: energy-based importance resampling of the parallel draft (Xu et al. 2025, alg. 1).

Inside the time window [t_lo, t_hi], each step draws K full candidates x0^(j) from the
factorised proposal q(x0 | x_t) (masked positions drawn independently in float64, unmasked
ones copied), weighs them by

    log w_j = -E(x0^(j), x_t) = log p_AR(x0^(j)) - sum_{i masked} log q(x0^(j)_i | x_t),

draws one candidate per row from softmax(log w / temperature), and hands it to the strategy,
which reveals a subset of its values as usual. As K grows each step becomes an exact draw
from the target restricted to x_t; with exact marginals and the exact joint as AR model, the
whole chain samples the true distribution at any number of steps. Outside the window, and for
K = 1 (a single candidate has weight 1), the guide is exactly ``Independent``.

Not repeated from the public release: weights are softmax(-E) (not +E), the proposal term
sums log-probabilities (not probabilities), candidates of different rows are kept apart
(row b's candidates are rows b*K .. b*K+K-1 of one batched AR call), and draws are float64.

With a denoiser KV cache (``decoding.cache``; semi-autoregressive blocks) only the current
block's rows are computed: the candidates then fill the masked positions of the block, and
the energy is that of the sequence up to the block's end (the AR model's joint of the prefix
and the block, restricted to x_t), the block-wise form of the same target.
"""

from __future__ import annotations

import torch

from decoding.cache import refuse_adaptive, window_end
from decoding.guides.independent import Independent
from decoding.protocols import check_vocabularies
from decoding.resampling import METHODS, effective_sample_size, normalized_weights, resample
from decoding.types import Draft, GuideContext
from edlm.energies.ar import AREnergy


class EnergyGuide:
    """Importance-resample K factorised candidates by an energy (default: the AR energy).

    Args:
        ar: AR model sharing the denoiser's tokenizer (``decoding.protocols.ARModel``).
        num_candidates: K >= 1.
        window: (t_lo, t_hi); steps whose start time t lies in it use the energy.
        carry_over: AR energy over the masked positions only (see ``edlm.energies``).
        temperature: > 0, divides the log-weights.
        resampling: "multinomial" or "systematic".
        energy: callable (candidates (N, L), masked (N, L), log_q (N,), ar) -> (N,) energies;
            overrides the AR energy (e.g. a noise-contrastive energy model). ``ar`` is the
            engine's counting handle over ``ar`` (every AR call through it is counted).
    """

    def __init__(self, ar, num_candidates: int = 4, window=(0.0, 1.0), carry_over: bool = False,
                 temperature: float = 1.0, resampling: str = "multinomial", energy=None):
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
        t_lo, t_hi = window
        if not 0.0 <= t_lo <= t_hi <= 1.0:
            raise ValueError(f"window must satisfy 0 <= t_lo <= t_hi <= 1, got {window}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if resampling not in METHODS:
            raise ValueError(f"resampling must be one of {METHODS}, got {resampling!r}")
        self.ar, self.num_candidates = ar, num_candidates
        self.window = (float(t_lo), float(t_hi))
        self.temperature, self.resampling = temperature, resampling
        self.energy = energy if energy is not None else AREnergy(carry_over=carry_over)
        self._independent = Independent()

    def check(self, denoiser) -> None:
        check_vocabularies(denoiser, self.ar)

    def check_cache(self, strategy) -> None:
        refuse_adaptive(self, strategy)

    def active(self, t: float) -> bool:
        return self.num_candidates > 1 and self.window[0] <= t <= self.window[1]

    def needed_rows(self, masked: torch.Tensor, request: torch.Tensor, info) -> torch.Tensor:
        """Inside the window every candidate fills all masked positions; outside, the request."""
        return masked if self.active(info.t) else request

    def propose(self, ctx: GuideContext, generator: torch.Generator) -> Draft:
        if not self.active(ctx.info.t):
            return self._independent.propose(ctx, generator)
        return self.importance_draft(ctx, generator, self.num_candidates)

    def importance_draft(self, ctx: GuideContext, generator: torch.Generator, k: int) -> Draft:
        """Draw k candidates over all masked positions (of the current block, with a cache)
        and keep one per row by weight."""
        B, L = ctx.x.shape
        region = ctx.masked if ctx.window is None else ctx.masked & ctx.window
        end = L if ctx.window is None else window_end(ctx.window)
        tokens, log_q = ctx.marginals.sample(region, generator, num_samples=k)  # (K, B, L)
        cands = torch.where(region, tokens, ctx.x).transpose(0, 1)  # (B, K, L)
        log_q = log_q.transpose(0, 1)
        masked = region[:, None, :end].expand(B, k, end)
        energy = self.energy(cands[..., :end].reshape(B * k, end), masked.reshape(B * k, end),
                             log_q.sum(dim=2).reshape(B * k), ctx.ar)
        weights = normalized_weights(-energy.view(B, k), self.temperature)
        choice = resample(weights, 1, generator, self.resampling)[:, 0]
        rows = torch.arange(B, device=ctx.x.device)
        return Draft(tokens=cands[rows, choice], log_q=log_q[rows, choice],
                     ess=effective_sample_size(weights))
