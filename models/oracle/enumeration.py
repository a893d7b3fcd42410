"""Exact quantities of a small HMM by enumerating all V**L sequences (a mixin of ``HMM``).

Only usable when V**L <= MAX_ENUMERATION: the joint, the entropy, conditionals on clamped
positions, and the total variation between samples and the truth (the tests' ground truth).
"""

from __future__ import annotations

import torch
from torch import Tensor

MAX_ENUMERATION = 2_000_000
_CHUNK = 1 << 16  # rows per forward pass when scoring the whole enumeration


def encode(samples: Tensor, vocab_size: int) -> Tensor:
    """(N, L) long tokens -> (N,) long index in base-V digits, position 0 most significant.

    Index order is therefore the lexicographic order used by ``HMM.all_sequences``.
    """
    length = samples.shape[-1]
    weights = vocab_size ** torch.arange(length - 1, -1, -1, device=samples.device)
    return (samples.long() * weights).sum(-1)


def _categorical(probs: Tensor, generator: torch.Generator | None, n: int | None = None) -> Tensor:
    """Float64 draws by inverse CDF (no float32 rounding).

    (N, K) probabilities -> (N,) long, one draw per row; or (K,) probabilities and ``n`` ->
    (n,) long draws from that one distribution (without materialising n copies of it).
    """
    cdf = probs.cumsum(-1)
    rows = n if probs.dim() == 1 else probs.shape[0]
    u = torch.rand(rows, dtype=torch.float64, generator=generator)
    u = u * cdf[-1] if probs.dim() == 1 else (u.unsqueeze(-1) * cdf[:, -1:])
    # right=True skips zero-probability categories even when u is exactly 0.
    idx = torch.searchsorted(cdf, u, right=True)
    return idx.reshape(rows).clamp_(max=probs.shape[-1] - 1)


class Enumeration:
    """Mixin for ``HMM``: uses its ``vocab_size``, ``length``, ``mask_id``, ``_joint`` cache,
    ``_check`` and ``log_prob``."""

    def _enumeration_size(self) -> int:
        size = self.vocab_size**self.length
        if size > MAX_ENUMERATION:
            raise ValueError(f"V**L = {self.vocab_size}**{self.length} = {size} sequences exceeds "
                             f"the enumeration limit {MAX_ENUMERATION}")
        return size

    def _digits(self, index: Tensor, position: int) -> Tensor:
        """Token at ``position`` of the sequences with the given enumeration indices."""
        return (index // self.vocab_size ** (self.length - 1 - position)) % self.vocab_size

    def all_sequences(self) -> Tensor:
        """(V**L, L) long, every sequence in lexicographic order (row k has ``encode`` k)."""
        index = torch.arange(self._enumeration_size())
        return torch.stack([self._digits(index, i) for i in range(self.length)], 1)

    def joint(self) -> Tensor:
        """(V**L,) float64 p(x) of ``all_sequences()`` rows (computed once, cached)."""
        if self._joint is None:
            seqs = self.all_sequences()
            self._joint = torch.cat([self.log_prob(c).exp() for c in seqs.split(_CHUNK)])
        return self._joint

    def entropy(self) -> float:
        """Exact H(X) in nats of the length-L distribution, by enumeration."""
        p = self.joint()[self.joint() > 0]
        return float(-(p * p.log()).sum())

    def entropy_rate(self) -> float:
        """Entropy per token in nats: ``entropy() / L``."""
        return self.entropy() / self.length

    def conditional_joint(self, prompt: Tensor) -> Tensor:
        """(L,) prompt with ``mask_id`` at free positions -> (V**L,) float64 p(x | clamped)."""
        prompt = self._check(torch.as_tensor(prompt).reshape(1, -1), allow_mask=True)[0]
        if prompt.shape[0] != self.length:
            raise ValueError(f"prompt length {prompt.shape[0]} != HMM length {self.length}")
        p = self.joint()
        index = torch.arange(p.shape[0])
        keep = torch.ones_like(p, dtype=torch.bool)
        for i in (prompt != self.mask_id).nonzero().flatten().tolist():
            keep &= self._digits(index, i) == prompt[i]
        p = p * keep
        if p.sum() <= 0:
            raise ValueError("the prompt has probability 0 under the HMM")
        return p / p.sum()

    def _tv(self, index: Tensor, prompt: Tensor | None) -> float:
        """TV between the empirical law of (N,) enumeration indices and the (conditional) truth."""
        p = self.joint() if prompt is None else self.conditional_joint(prompt)
        counts = torch.bincount(index, minlength=p.shape[0]).double()
        return float(0.5 * (counts / index.shape[0] - p).abs().sum())

    def tv(self, samples: Tensor, prompt: Tensor | None = None) -> float:
        """Total variation between the empirical law of (N, L) samples and the true (conditional)
        joint: 0.5 * sum_x |p_hat(x) - p(x)|."""
        samples = self._check(samples, allow_mask=False)
        if samples.shape[1] != self.length:
            raise ValueError(f"samples have length {samples.shape[1]}, HMM length {self.length}")
        return self._tv(encode(samples, self.vocab_size), prompt)

    def tv_noise_floor(self, num_samples: int, prompt: Tensor | None = None,
                       generator: torch.Generator | None = None, repeats: int = 5) -> float:
        """Mean TV to the truth of ``num_samples`` exact draws from it, over ``repeats`` draws.

        This is the sampling noise a perfect sampler shows at that sample size; tests compare a
        sampler's TV against it. Without a generator a fixed seed (0) keeps it reproducible.
        """
        if num_samples < 1 or repeats < 1:
            raise ValueError(f"num_samples and repeats must be >= 1, got {num_samples}, {repeats}")
        generator = torch.Generator().manual_seed(0) if generator is None else generator
        p = self.joint() if prompt is None else self.conditional_joint(prompt)
        tvs = [self._tv(_categorical(p, generator, num_samples), prompt) for _ in range(repeats)]
        return sum(tvs) / repeats
