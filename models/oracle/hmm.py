"""The exact oracle language: a hidden Markov model over sequences of a fixed length.

Every quantity a sampler is tested against is exact here, in float64: p(x), the AR conditionals
p(x_i | x_<i), the masked marginals p(x_i | unmasked positions) for any mask pattern, the
prefix-only marginals DCD needs and, by enumerating all V**L sequences when that is small, the
entropy and the total variation between samples and the truth.

Notation: V real tokens (ids ``0..V-1``), ``mask_id = V``, H hidden states, L positions.
Exact quantities accept any length L' <= L: they then describe the first L' tokens, because the
HMM's later positions are simply unobserved (marginalised).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from models.oracle.enumeration import MAX_ENUMERATION, Enumeration, _categorical, encode

__all__ = ["HMM", "MAX_ENUMERATION", "encode"]


def _dirichlet(alpha: Tensor, generator: torch.Generator) -> Tensor:
    """(..., K) concentrations -> (..., K) Dirichlet rows drawn from ``generator``."""
    gamma = torch._standard_gamma(alpha, generator=generator)
    return gamma / gamma.sum(-1, keepdim=True)


def _stochastic(name: str, value: Tensor, ndim: int) -> Tensor:
    """Validate a probability vector/matrix (rows sum to 1) and return it as float64."""
    t = torch.as_tensor(value, dtype=torch.float64).cpu()
    if t.dim() != ndim or t.numel() == 0:
        raise ValueError(f"HMM {name} must be a non-empty {ndim}-D tensor, got {tuple(t.shape)}")
    if not torch.isfinite(t).all() or (t < 0).any():
        raise ValueError(f"HMM {name} must be finite and non-negative")
    sums = t.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-6, rtol=0):
        raise ValueError(f"HMM {name} rows must sum to 1 (got sums {sums.tolist()})")
    return t / sums.unsqueeze(-1)  # remove the tolerated drift so sums are 1 to float64 precision


class HMM(Enumeration):
    """A hidden Markov model over sequences of exactly ``length`` tokens.

    Args:
        initial: (H,) p(h_0).
        transition: (H, H) p(h_{i+1} = b | h_i = a) at ``[a, b]``.
        emission: (H, V) p(x_i = v | h_i = h) at ``[h, v]``.
        length: L, the sequence length.
    """

    def __init__(self, initial: Tensor, transition: Tensor, emission: Tensor, length: int):
        self.initial = _stochastic("initial", initial, 1)
        self.transition = _stochastic("transition", transition, 2)
        self.emission = _stochastic("emission", emission, 2)
        h = self.initial.shape[0]
        if self.transition.shape != (h, h) or self.emission.shape[0] != h:
            shapes = [tuple(t.shape) for t in (self.initial, self.transition, self.emission)]
            raise ValueError(f"HMM shapes disagree (initial, transition, emission): {shapes}")
        if int(length) != length or length < 1:
            raise ValueError(f"HMM length must be a positive integer, got {length}")
        self.num_states, self.vocab_size, self.length = h, self.emission.shape[1], int(length)
        self._joint: Tensor | None = None

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"HMM(V={self.vocab_size}, H={self.num_states}, L={self.length})"

    # ----- constructors -------------------------------------------------------------------
    @classmethod
    def random(cls, vocab_size: int, num_states: int, length: int, seed: int = 0,
               concentration: float = 0.5) -> HMM:
        """Every row (initial, transition, emission) Dirichlet(concentration), seeded."""
        if concentration <= 0:
            raise ValueError(f"concentration must be positive, got {concentration}")
        g = torch.Generator().manual_seed(seed)
        rows = [(num_states,), (num_states, num_states), (num_states, vocab_size)]
        params = [_dirichlet(torch.full(r, float(concentration), dtype=torch.float64), g)
                  for r in rows]  # initial, transition, emission, drawn in that order
        return cls(*params, length)

    @classmethod
    def shift(cls, vocab_size: int, length: int, num_states: int | None = None,
              noise: float = 0.02, seed: int = 0) -> HMM:
        """Strong local dependence: the state moves by +1 or +2 (mod H), probability 1/2 each.

        State h emits token ``h mod V`` with probability ``1 - noise``; the rest is spread evenly
        over the other tokens. The initial state is uniform; H defaults to V. The language has no
        random parameters: ``seed`` is accepted only so every constructor has the same signature.
        """
        h = vocab_size if num_states is None else num_states
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise must lie in [0, 1], got {noise}")
        states = torch.arange(h)
        transition = torch.zeros(h, h, dtype=torch.float64)
        transition[states, (states + 1) % h] += 0.5  # += so that H < 3 (moves coincide) stays valid
        transition[states, (states + 2) % h] += 0.5
        emission = torch.full((h, vocab_size), noise / max(vocab_size - 1, 1), dtype=torch.float64)
        emission[states, states % vocab_size] = 1.0 - noise if vocab_size > 1 else 1.0
        return cls(torch.full((h,), 1.0 / h, dtype=torch.float64), transition, emission, length)

    @classmethod
    def sticky(cls, vocab_size: int, num_states: int, length: int, stay: float = 0.9,
               seed: int = 0) -> HMM:
        """Long runs: the state stays with probability ``stay``, else jumps uniformly elsewhere.

        Each state has a favourite token (distinct ones while H <= V) holding 60% of its emission
        mass; the other 40% is a Dirichlet(1) row, so every token stays possible.
        """
        if not 0.0 <= stay <= 1.0:
            raise ValueError(f"stay must lie in [0, 1], got {stay}")
        g = torch.Generator().manual_seed(seed)
        eye = torch.eye(num_states, dtype=torch.float64)
        jump = (1.0 - stay) / max(num_states - 1, 1)  # a single state can only stay
        transition = eye if num_states == 1 else stay * eye + jump * (1.0 - eye)
        distinct = num_states <= vocab_size
        favourite = (torch.randperm(vocab_size, generator=g)[:num_states] if distinct
                     else torch.randint(vocab_size, (num_states,), generator=g))
        peak = torch.nn.functional.one_hot(favourite, vocab_size).double()
        spread = _dirichlet(torch.ones(num_states, vocab_size, dtype=torch.float64), g)
        initial = torch.full((num_states,), 1.0 / num_states, dtype=torch.float64)
        return cls(initial, transition, 0.6 * peak + 0.4 * spread, length)

    # ----- recursions ---------------------------------------------------------------------
    def _check(self, x: Tensor, allow_mask: bool) -> Tensor:
        """Validate (B, L') integer tokens (L' <= L); return them as CPU long, where we compute."""
        if not isinstance(x, Tensor) or x.dim() != 2 or x.dtype.is_floating_point:
            raise ValueError(f"expected a (B, L) integer tensor, got {getattr(x, 'shape', x)!r}")
        if not 1 <= x.shape[1] <= self.length:
            raise ValueError(f"sequence length {x.shape[1]} outside 1..{self.length} of the HMM")
        top = self.mask_id if allow_mask else self.vocab_size - 1
        if x.numel() and (x.min() < 0 or x.max() > top):
            what = "token ids and mask_id" if allow_mask else "real token ids (no mask)"
            raise ValueError(f"ids must be {what} in [0, {top}], got [{x.min()}, {x.max()}]")
        return x.long().cpu()

    def _likelihoods(self, x: Tensor) -> Tensor:
        """(B, L') tokens -> (B, L', H) p(x_i | h); 1 at masked positions (marginalised)."""
        lik = self.emission.T[x.clamp(max=self.vocab_size - 1)]
        return lik.masked_fill_((x == self.mask_id).unsqueeze(-1), 1.0)

    def step(self, pred: Tensor, lik: Tensor) -> tuple[Tensor, Tensor]:
        """One filtering step: pred (B, H) p(h_i | evidence < i), lik (B, H) p(evidence at i | h_i)
        (e.g. ``emission.T[tokens]``) -> (B, H) p(h_{i+1} | evidence <= i), (B,) log p(evidence at
        i | evidence < i). Where that evidence is impossible the log is -inf and the filter is
        carried unchanged, so later rows stay finite (conditionals given a probability-0 prefix).
        """
        post = pred * lik
        c = post.sum(-1, keepdim=True)
        post = torch.where(c > 0, post / c.clamp_min(1e-300), pred)
        return post @ self.transition, c.squeeze(-1).log()

    def predict(self, pred: Tensor) -> Tensor:
        """(..., H) state distribution -> (..., V) float64 log-probabilities of its token."""
        return (pred @ self.emission).log()

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, L') -> filters (B, L', H) p(h_i | evidence < i) and log-normalisers (B, L')."""
        lik = self._likelihoods(x)
        pred = self.initial.expand(x.shape[0], -1)
        preds, logc = [], []
        for i in range(x.shape[1]):
            preds.append(pred)
            pred, lc = self.step(pred, lik[:, i])
            logc.append(lc)
        return torch.stack(preds, 1), torch.stack(logc, 1)

    def _one_hot_rows(self, out: Tensor, x: Tensor) -> Tensor:
        """Overwrite rows at unmasked positions of (B, L', V) ``out`` by log one-hot(x_i)."""
        hot = torch.full_like(out, -math.inf)
        hot.scatter_(-1, x.clamp(max=self.vocab_size - 1).unsqueeze(-1), 0.0)
        return torch.where((x != self.mask_id).unsqueeze(-1), hot, out)

    @staticmethod
    def _require_possible(logc: Tensor) -> None:
        if torch.isneginf(logc).any():
            raise ValueError("the unmasked tokens have probability 0 under the HMM")

    # ----- exact quantities ---------------------------------------------------------------
    def log_prob(self, x: Tensor) -> Tensor:
        """(N, L') -> (N,) float64 log p(x) of the first L' tokens; mask ids are marginalised."""
        return self._forward(self._check(x, allow_mask=True))[1].sum(-1).to(x.device)

    def ar_log_probs(self, x: Tensor) -> Tensor:
        """(B, L') real tokens -> (B, L', V) float64; row i = log p(x_i = v | x_<i)."""
        pred, _ = self._forward(self._check(x, allow_mask=False))
        return self.predict(pred).to(x.device)

    def masked_marginals(self, x: Tensor) -> Tensor:
        """(B, L') tokens with ``mask_id`` -> (B, L', V) float64 log p(x_i = v | unmasked of x).

        Forward-backward with masked positions marginalised. Rows at unmasked positions are the
        log one-hot of their token (0 at it, -inf elsewhere).
        """
        xc = self._check(x, allow_mask=True)
        pred, logc = self._forward(xc)
        self._require_possible(logc)
        lik = self._likelihoods(xc)
        # beta_i(h) ∝ p(evidence after i | h_i = h), rescaled each step against underflow.
        beta = torch.ones_like(pred)
        for i in range(xc.shape[1] - 2, -1, -1):
            b = (lik[:, i + 1] * beta[:, i + 1]) @ self.transition.T
            beta[:, i] = b / b.sum(-1, keepdim=True)
        post = pred * beta  # p(h_i | all evidence except position i), unnormalised
        post = post / post.sum(-1, keepdim=True)
        return self._one_hot_rows(self.predict(post), xc).to(x.device)

    def causal_marginals(self, x: Tensor) -> Tensor:
        """(B, L') tokens with ``mask_id`` -> (B, L', V) float64 log p(x_i = v | unmasked j < i).

        Prefix-only context (as DCD needs); masked prefix positions are marginalised. Rows at
        unmasked positions are the log one-hot of their token, as in ``masked_marginals``.
        """
        xc = self._check(x, allow_mask=True)
        pred, logc = self._forward(xc)
        self._require_possible(logc)
        return self._one_hot_rows(self.predict(pred), xc).to(x.device)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, L) long exact samples, ancestral, drawn from ``generator``."""
        h = _categorical(self.initial.expand(n, -1), generator)
        out = torch.empty(n, self.length, dtype=torch.long)
        for i in range(self.length):
            out[:, i] = _categorical(self.emission[h], generator)
            h = _categorical(self.transition[h], generator)
        return out

    def gen_nll(self, samples: Tensor) -> float:
        """Mean of -log p(x) / L' over (N, L') samples (nats per token)."""
        samples = self._check(samples, allow_mask=False)
        return float(-(self.log_prob(samples) / samples.shape[1]).mean())
