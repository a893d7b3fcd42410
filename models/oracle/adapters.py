"""The HMM oracle seen through the engine's protocols (``decoding.protocols``).

``HMMDenoiser`` is the exact masked-diffusion denoiser of the HMM language and
``HMMAutoregressive`` its exact autoregressive model, so samplers built from them can be tested
against the true joint by enumeration. Both compute in float64 and return float32, like a network.
"""

from __future__ import annotations

import torch
from torch import Tensor

from decoding.schedules import LogLinear
from models.oracle.hmm import HMM


class HMMDenoiser(torch.nn.Module):
    """Exact denoiser: log p(x0_i | unmasked positions of x) from forward-backward.

    Attributes follow ``decoding.protocols.Denoiser``; ``mask_id = V``. The exact marginals depend
    on the mask pattern only, not on the diffusion time, hence ``time_conditioned = False`` (the
    engine may then skip a forward when x is unchanged).
    """

    supports_causal = True
    time_conditioned = False
    tokenizer = None
    schedule = LogLinear()  # the exact marginals ignore t; only the ideal score mass uses it

    def __init__(self, hmm: HMM):
        super().__init__()
        self.hmm = hmm
        self.vocab_size = hmm.vocab_size
        self.mask_id = hmm.mask_id
        self.max_length = hmm.length

    def log_probs(self, x: Tensor, t: Tensor | None = None, causal: bool = False) -> Tensor:
        """Per-position marginals.

        Args:
            x: (B, L') long, real tokens or ``mask_id``; L' <= ``max_length`` (a shorter x is the
                HMM's first L' positions).
            t: (B,) diffusion time, ignored.
            causal: if True, position i conditions only on the unmasked positions before i.

        Returns:
            (B, L', V) float32 log-probabilities; rows at unmasked positions are log one-hot.
        """
        out = self.hmm.causal_marginals(x) if causal else self.hmm.masked_marginals(x)
        return out.float()

    def log_probs_with_mass(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Exact marginals (B, L', V) and the exact score's log mass log α_t/(1-α_t), (B, L')."""
        mass = self.schedule.ideal_log_mass(torch.as_tensor(t).expand(x.shape[0]))
        return self.log_probs(x, t), mass.to(x.device)[:, None].expand(x.shape)

    def forward(self, x: Tensor, t: Tensor | None = None, causal: bool = False) -> Tensor:
        return self.log_probs(x, t, causal)


class HMMCache:
    """Incremental state of ``HMMAutoregressive``.

    ``filters``: (B, length + 1, H) float64; ``filters[:, k]`` is p(h_k | the fed tokens the
    model sees before position k). ``tokens``: (B, length) the fed tokens (kept only for a
    finite context). Keeping every
    prefix's filter makes ``crop`` an exact slice.
    """

    def __init__(self, filters: Tensor, device: torch.device):
        self.filters = filters
        self.tokens = torch.zeros(filters.shape[0], 0, dtype=torch.long)
        self.device = device  # where the caller's tensors live; results are returned there

    @property
    def length(self) -> int:
        return self.filters.shape[1] - 1

    @property
    def batch_size(self) -> int:
        return self.filters.shape[0]


class HMMAutoregressive(torch.nn.Module):
    """Exact autoregressive model of the HMM language (``decoding.protocols.ARModel``).

    Row 0 is p(x_0) (the HMM needs no BOS token). Ids outside ``[0, V)``, such as a mask id, raise
    ``ValueError``. At most ``hmm.length`` tokens can be fed to a cache; the prediction after the
    last one is the chain's natural continuation to position L.

    ``context`` c (None: the whole prefix) makes it the exact short-sighted model
    p(x_i | x_{i-c} .. x_{i-1}) of the same language: a guide that is right but sees little.
    """

    tokenizer = None

    def __init__(self, hmm: HMM, context: int | None = None):
        super().__init__()
        if context is not None and context < 1:
            raise ValueError(f"context must be >= 1 token or None, got {context}")
        self.hmm, self.context = hmm, context
        self.vocab_size = hmm.vocab_size
        self.max_length = hmm.length
        priors = [hmm.initial]
        for _ in range(hmm.length):
            priors.append(priors[-1] @ hmm.transition)
        self._priors = torch.stack(priors)  # (L+1, H): p(h_i) before any evidence

    def _window_filter(self, tokens: Tensor) -> Tensor:
        """(B, n) fed tokens -> (B, H) p(h_n | the last ``context`` of them)."""
        n = tokens.shape[1]
        lo = max(0, n - self.context)
        pred = self._priors[lo].expand(tokens.shape[0], -1)
        lik = self.hmm.emission.T[tokens[:, lo:].long().cpu()]
        for j in range(n - lo):
            pred, _ = self.hmm.step(pred, lik[:, j])
        return pred

    def log_probs(self, x: Tensor) -> Tensor:
        """(B, L') long real tokens -> (B, L', V) float32; row i = log p(x_i | x_<i) (the last
        ``context`` of them)."""
        if self.context is None:
            return self.hmm.ar_log_probs(x).float()
        xc = self.hmm._check(x, allow_mask=False)
        rows = [self._window_filter(xc[:, :i]) for i in range(xc.shape[1])]
        return self.hmm.predict(torch.stack(rows, 1)).float().to(x.device)

    def forward(self, x: Tensor) -> Tensor:
        return self.log_probs(x)

    def start(self, batch_size: int, device: torch.device | str = "cpu") -> tuple[Tensor, HMMCache]:
        """Open a cache of length 0: returns ((B, V) float32 log p(x_0), cache)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        filters = self.hmm.initial.expand(batch_size, 1, -1).clone()
        cache = HMMCache(filters, torch.device(device))
        return self.hmm.predict(filters[:, 0]).float().to(cache.device), cache

    def extend(self, cache: HMMCache, tokens: Tensor) -> Tensor:
        """Feed (B, n) real tokens; returns (B, n, V) float32, row j = log p(next | all fed)."""
        if tokens.dim() != 2 or tokens.shape[0] != cache.batch_size:
            raise ValueError(f"tokens must be ({cache.batch_size}, n), got {tuple(tokens.shape)}")
        n = tokens.shape[1]
        if cache.length + n > self.hmm.length:
            raise ValueError(f"cannot feed {n} tokens after {cache.length}: the HMM has length "
                             f"{self.hmm.length}")
        if n and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"AR tokens must be real ids in [0, {self.vocab_size}), got "
                             f"[{tokens.min()}, {tokens.max()}] (a mask id cannot be fed)")
        cache.device = tokens.device
        lik = self.hmm.emission.T[tokens.long().cpu()]  # (B, n, H)
        pred, new = cache.filters[:, -1], []
        if self.context is not None:  # a windowed prediction refilters its last tokens
            cache.tokens = torch.cat([cache.tokens, tokens.long().cpu()], 1)
        for j in range(n):
            if self.context is None:
                pred, _ = self.hmm.step(pred, lik[:, j])
            else:
                pred = self._window_filter(cache.tokens[:, : cache.length + j + 1])
            new.append(pred)
        if not new:
            return torch.empty(cache.batch_size, 0, self.vocab_size, device=tokens.device)
        new = torch.stack(new, 1)
        cache.filters = torch.cat([cache.filters, new], 1)
        return self.hmm.predict(new).float().to(tokens.device)

    def crop(self, cache: HMMCache, length: int) -> None:
        """Keep only the first ``length`` fed tokens (0 <= length <= cache.length)."""
        if not 0 <= length <= cache.length:
            raise ValueError(f"crop length {length} outside 0..{cache.length}")
        cache.filters = cache.filters[:, : length + 1]
        cache.tokens = cache.tokens[:, :length]

    def reorder(self, cache: HMMCache, index: Tensor) -> None:
        """Replace the cache's rows by ``rows[index]``; ``index`` (B',) long (may repeat)."""
        cache.filters = cache.filters[index.long().cpu()]
        cache.tokens = cache.tokens[index.long().cpu()]
