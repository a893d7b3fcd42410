"""A denoiser and an AR model on the ids they share: checked, then aligned.

``pair_models`` first checks that the two tokenizers agree (``check_shared_tokenizer``: probe
strings, EOS, and the token of every id both define). It then puts both models on their common
real ids: the ids the denoiser can emit (its ``token_space``: no mask, no padding rows) that the
AR model also scores. Where that is every id of both, the models come back unchanged. Otherwise
each is wrapped so that its engine ids are the common ones, ``0..V-1`` with the mask at ``V``,
and its log-probabilities are renormalised over them: Dream (real ids 0..151665) with
Qwen2.5-0.5B (0..151664) loses Dream's ``<|beginoftext|>``; DiffuGPT-small with GPT-2 takes
GPT-2's token 10541 (DiffuGPT's mask) out of the guide, which would otherwise write a token that
reads as a mask.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .tokenizer_check import check_shared_tokenizer, raw_tokenizer
from .vocab import TokenSpace, engine_tokenizer

__all__ = ["RestrictedAR", "RestrictedDenoiser", "model_ids", "pair_models"]


def model_ids(model: Any) -> Tensor:
    """(V,) the model (tokenizer) id of each of the model's engine ids."""
    space = getattr(model, "token_space", None)
    return space.ids if space is not None else torch.arange(int(model.vocab_size))


def _space(model: Any, keep: Tensor) -> TokenSpace:
    """The model's token space cut to the engine ids ``keep``."""
    space = getattr(model, "token_space", None)
    if space is not None:
        return space.restrict(space.ids[keep])
    v = int(model.vocab_size)  # engine ids are model ids; the mask (if any) sits at V
    return TokenSpace(keep, int(getattr(model, "mask_id", v)), v + 1)


class RestrictedDenoiser(nn.Module):
    """A denoiser on a subset ``keep`` of its real tokens, renormalised over them.

    Args:
        inner: a ``decoding.protocols.Denoiser``.
        keep: (V',) long, sorted indices of the inner engine ids kept.
    """

    def __init__(self, inner: Any, keep: Tensor):
        super().__init__()
        self.inner = inner
        self.register_buffer("keep", keep.long(), persistent=False)
        self.register_buffer("_in", torch.cat([keep.long(), torch.tensor([inner.mask_id])]),
                             persistent=False)
        self.vocab_size, self.mask_id = int(keep.numel()), int(keep.numel())
        self.token_space = _space(inner, keep)
        self.tokenizer = engine_tokenizer(raw_tokenizer(inner), self.token_space)
        for name in ("supports_causal", "supports_rows", "max_length", "schedule",
                     "time_conditioned"):
            if hasattr(inner, name):
                setattr(self, name, getattr(inner, name))
        if hasattr(inner, "log_probs_with_mass"):  # SEDD's samplers read the score's mass
            self.log_probs_with_mass = self._with_mass

    def _with_mass(self, x: Tensor, t: Tensor, **rows: Any) -> tuple[Tensor, Tensor]:
        """The renormalised marginals, and the score's mass over the kept tokens only."""
        lp, log_mass = self.inner.log_probs_with_mass(self._in.to(x.device)[x], t, **rows)
        kept = lp.index_select(-1, self.keep.to(lp.device))
        share = torch.logsumexp(kept, dim=-1)
        if rows.get("rows") is not None:  # packed marginals; the mass stays (B, L)
            log_mass = log_mass.clone()
            log_mass[rows["rows"]] = log_mass[rows["rows"]] + share
        else:
            log_mass = log_mass + share
        return kept - share.unsqueeze(-1), log_mass

    def log_probs(self, x: Tensor, t: Tensor, causal: bool = False, **rows: Any) -> Tensor:
        """(B, L) ids of this space -> (B, L, V') (or packed rows), renormalised on ``keep``."""
        lp = self.inner.log_probs(self._in.to(x.device)[x], t, causal=causal, **rows)
        return torch.log_softmax(lp.index_select(-1, self.keep.to(lp.device)), dim=-1)


class RestrictedAR(nn.Module):
    """An AR model on a subset ``keep`` of its tokens, its conditionals renormalised over them.

    Satisfies ``decoding.protocols.ARModel`` (batch and incremental APIs).
    """

    def __init__(self, inner: Any, keep: Tensor):
        super().__init__()
        self.inner = inner
        self.register_buffer("keep", keep.long(), persistent=False)
        self.vocab_size = int(keep.numel())
        self.token_space = _space(inner, keep)
        self.tokenizer = engine_tokenizer(raw_tokenizer(inner), self.token_space)
        for name in ("max_length", "context", "bos_id"):
            if hasattr(inner, name):
                setattr(self, name, getattr(inner, name))

    def _ids(self, x: Tensor) -> Tensor:
        return self.keep.to(x.device)[x]

    def _cut(self, lp: Tensor) -> Tensor:
        return torch.log_softmax(lp.index_select(-1, self.keep.to(lp.device)), dim=-1)

    def log_probs(self, x: Tensor) -> Tensor:
        return self._cut(self.inner.log_probs(self._ids(x)))

    def token_log_probs(self, x: Tensor) -> Tensor:
        """(B, L) -> (B, L) log p(x_i | x_<i) on the common ids."""
        return self.log_probs(x).gather(-1, x.unsqueeze(-1)).squeeze(-1)

    def start(self, batch_size: int) -> tuple[Tensor, Any]:
        first, cache = self.inner.start(batch_size)
        return self._cut(first), cache

    def extend(self, cache: Any, tokens: Tensor) -> Tensor:
        return self._cut(self.inner.extend(cache, self._ids(tokens)))

    def crop(self, cache: Any, length: int) -> None:
        self.inner.crop(cache, length)

    def reorder(self, cache: Any, index: Tensor) -> None:
        self.inner.reorder(cache, index)


def pair_models(denoiser: Any, ar: Any, probes: Any = None) -> tuple[Any, Any]:
    """Check that ``denoiser`` and ``ar`` share a tokenizer; put both on their common ids.

    Returns:
        (denoiser, ar): the same objects when every real id is common, else wrapped
        (``RestrictedDenoiser`` / ``RestrictedAR``) on the common ids.

    Raises:
        ValueError: the tokenizers differ (the message names the first differing id), or they
            share no id.
    """
    check_shared_tokenizer(denoiser, ar, probes)
    d_ids, a_ids = model_ids(denoiser), model_ids(ar)
    common = d_ids[torch.isin(d_ids, a_ids)]
    if common.numel() == 0:
        raise ValueError("the denoiser and the AR model share no real token id")
    if common.numel() < d_ids.numel():
        denoiser = RestrictedDenoiser(denoiser, torch.searchsorted(d_ids, common))
    if common.numel() < a_ids.numel():
        ar = RestrictedAR(ar, torch.searchsorted(a_ids, common))
    return denoiser, ar
