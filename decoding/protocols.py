"""The contracts between the engine and the models.

Any `torch.nn.Module` (or plain object) that has these attributes and methods can be plugged
into `decoding.Coordinator` and the guides; nothing in `decoding` imports a concrete model.

Conventions
-----------
* Real tokens are ``0 .. vocab_size-1``; a denoiser's ``mask_id`` lies outside that range
  (usually ``vocab_size``). AR models never see the mask id.
* Time ``t`` is the diffusion time in ``[0, 1]`` (1 = fully masked), one value per row.
* All log-probabilities are natural-log, normalised over the ``vocab_size`` real tokens.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Denoiser(Protocol):
    """A masked diffusion model seen as per-position marginals.

    Attributes:
        vocab_size: V, the number of real tokens.
        mask_id: the id of the MASK state (outside ``0..V-1``).
        supports_causal: whether ``log_probs(..., causal=True)`` is available.
        supports_rows: optional (default False); whether ``log_probs`` takes ``rows``.
        max_length: longest sequence the model accepts (``None``: unbounded).
        schedule: optional ``decoding.schedules.Schedule`` the model was trained with (default
            log-linear, ε = 1e-3): ``t`` is a time of this schedule, and the engine maps its
            own schedule's times to it.

    Optional method ``log_probs_with_mass(x, t) -> (log_probs, log_mass)``: the (B, L, V)
    marginals of ``log_probs`` and, from the same forward, the (B, L) log of the model's
    concrete score's total mass over the real tokens, Σ_y s(x_t)_y (SEDD, Lou et al. 2024; the
    true score's mass at a masked position is α_t/(1-α_t)). SEDD's own samplers
    (``decoding.strategies.Analytic``, ``Euler``) reveal by it and need it. With
    ``supports_rows`` it also takes ``rows``: packed marginals, and -inf mass outside ``rows``
    (the engine asks for the masked rows: the mass is read there only).

    Rows-only output: most of a step's rows are never read (an ancestral step out of 64
    reveals about 1/64 of them), and the (B, L, V) output head dominates the memory and the
    element-wise work of a call. A denoiser with ``supports_rows = True`` accepts
    ``rows``, a (B, L) bool mask, and returns only those rows, *packed*: (n, V) for the n True
    entries in row-major order (``decoding.sampling.Rows`` reads them by position). The
    Coordinator builds the mask from what the step will read: the positions a
    value-independent strategy reveals, a value-dependent strategy's draft region, and what
    the guide declares with ``needed_rows`` (EDLM: every masked position; DCD: the masked
    positions it drafts, for the causal call too). A denoiser without the attribute gets
    ``log_probs(x, t, causal)`` and returns every row, as before; the tokens drawn are the
    same either way.

    KV cache (optional, ``decoding.cache``): ``supports_cache`` lists the modes a denoiser
    implements (``("prefix", "dual")``), ``cache_block(causal)`` says whether a call's
    attention is bidirectional (None: the cache is an approximation refreshed at block starts)
    or never looks past the query's block of k positions (k: exact), and ``log_probs`` then
    takes ``cache=`` a ``decoding.cache.CacheCall``: it runs the call's positions only, reads
    the other keys and values from the call's store and writes its own there, and returns
    the packed ``rows`` (which lie among those positions).
    """

    vocab_size: int
    mask_id: int
    supports_causal: bool

    def log_probs(self, x: Tensor, t: Tensor, causal: bool = False) -> Tensor:
        """Marginals of the clean sequence given the noisy one.

        Args:
            x: (B, L) long, real tokens or ``mask_id``.
            t: (B,) float diffusion time.
            causal: if True, position i may only look at ``x[:, :i]`` (prefix-only context,
                as DCD needs: log p(x0_i | x_t^{<i})).
            rows: (only with ``supports_rows``) optional (B, L) bool, keyword argument.

        Returns:
            (B, L, V) float log p(x0_i = v | x); with ``rows``, (n, V) for its True entries
            in row-major order. Rows at unmasked positions are unused.
        """
        ...


@runtime_checkable
class ARModel(Protocol):
    """An autoregressive model over the same real tokens as the denoiser.

    Batch API: ``log_probs(x)`` scores whole sequences. Incremental API: ``start`` opens a
    cache holding only the model's own beginning-of-sequence context, ``extend`` feeds tokens,
    ``crop`` forgets the tail, ``reorder`` selects or repeats batch rows.
    """

    vocab_size: int

    def log_probs(self, x: Tensor) -> Tensor:
        """(B, L) long -> (B, L, V) float; row i is log p(x_i | x_<i), row 0 is given BOS."""
        ...

    # Optional: ``token_log_probs(x)`` -> (B, L) float, ``log_probs(x)`` gathered at x, for
    # callers that score given tokens only (EDLM's energy) without (B, L, V) log-probs.

    def start(self, batch_size: int) -> tuple[Tensor, Any]:
        """Open a cache: returns (log p(x_0 | BOS) of shape (B, V), cache with length 0)."""
        ...

    def extend(self, cache: Any, tokens: Tensor) -> Tensor:
        """Feed (B, n) tokens after the cached ones (updating the cache in place).

        Returns (B, n, V): row j is log p(next token | cached context, tokens[:, :j+1]).
        """
        ...

    def crop(self, cache: Any, length: int) -> None:
        """Keep only the first ``length`` fed tokens (BOS context excluded)."""
        ...

    def reorder(self, cache: Any, index: Tensor) -> None:
        """Replace the cache's batch rows by ``rows[index]``; ``index`` (B',) long."""
        ...


def check_vocabularies(denoiser: Denoiser, ar: ARModel) -> None:
    """Fail loudly unless the AR model scores exactly the denoiser's real tokens.

    (The full tokenizer check, with probe strings, is ``models.check_shared_tokenizer``.)
    """
    for model, name in ((denoiser, "denoiser"), (ar, "AR model")):
        if not hasattr(model, "vocab_size"):
            raise TypeError(f"the {name} lacks `vocab_size`")
    if ar.vocab_size != denoiser.vocab_size:
        raise ValueError(f"vocabulary mismatch: the denoiser has {denoiser.vocab_size} real "
                         f"tokens, the AR model {ar.vocab_size}; they must share a tokenizer")
    if 0 <= denoiser.mask_id < ar.vocab_size:
        raise ValueError(f"the denoiser's mask id {denoiser.mask_id} lies inside the AR "
                         f"vocabulary (0..{ar.vocab_size - 1})")
