"""Masked language models (BERT, RoBERTa, ModernBERT, ...) as one-step-trained denoisers.

Any checkpoint of a transformers ``AutoModelForMaskedLM`` class: its config's ``model_type`` is
in transformers' ``MODEL_FOR_MASKED_LM_MAPPING`` and its ``architectures`` name a class ending
in ``ForMaskedLM`` (that is the detection rule; no remote code runs). A masked LM predicts a
masked token from both sides, which is what ``log p(x0_i | x_t)`` asks; it was trained at one
mask rate (BERT: 15%), so high mask rates are outside its training.

Loading: transformers' own ``from_pretrained`` (meta-device init, weights in their stored dtype
unless ``dtype`` is given, legacy key names such as BERT's ``gamma``/``beta`` converted by
transformers), then strictly checked: a missing or mis-shaped tensor is an error, and so is an
unexpected one, except the pre-training heads a masked LM does not use (BERT-style ``pooler``
and next-sentence ``seq_relationship`` weights), which pre-training checkpoints carry.

Conventions:

* the mask is the tokenizer's ``mask_token_id``; no shift; no time input;
* special tokens are not real tokens: every id of the tokenizer's ``all_special_ids``
  (``[CLS]``, ``[SEP]``, ``[PAD]``, ``[UNK]``, ``[MASK]``, ``<s>``, ``</s>``, ...) is left out of
  the ``TokenSpace``, so the marginals never propose them (an ``[UNK]`` or ``[PAD]`` in
  generated text is never wanted);
* the model sees the sequence as it was trained, wrapped in the tokenizer's own template (BERT:
  ``[CLS] x [SEP]``, RoBERTa: ``<s> x </s>``); the wrapper tokens take context positions, are
  never output rows, and ``max_length`` is what remains of the model's positions;
* ``causal=True``: a lower-triangular 4D mask with the same weights (the wrapper's prefix is
  seen by all). Only where the model applies such a mask as given: models with local or
  sparse attention layers (ModernBERT's sliding windows, BigBird, Longformer) have
  ``supports_causal = False``, and a load-time probe checks the rest (a later token must not
  change an earlier output).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..hub import CheckpointError, listing, parse_dtype
from ..registry import Family, register
from ._common import additive_mask, on_device, space_for, stored_shapes
from .cached_trunks import masked_lm_cached_log_probs, probe_cache
from .token_space_denoiser import SpaceDenoiser

__all__ = ["MaskedLMDenoiser", "load_masked_lm"]

# Pre-training heads of BERT-style checkpoints that a *ForMaskedLM class has no place for.
_UNUSED_HEADS = re.compile(r"(^|\.)(pooler|seq_relationship)\.")


def masked_lm_types() -> set[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return set(MODEL_FOR_MASKED_LM_MAPPING_NAMES)


def claims(cfg: dict, files: set[str]) -> bool:
    arch = cfg.get("architectures") or ()
    return (cfg.get("model_type") in masked_lm_types()
            and any(str(a).endswith("ForMaskedLM") for a in arch))


def wrapper_ids(tokenizer: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ids the tokenizer puts before and after a text (its template), by encoding a probe
    with and without special tokens."""
    bare = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("a")["input_ids"])
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return tuple(full[:start]), tuple(full[start + len(bare):])
    return tuple(full), ()


def full_attention_only(config: Any) -> bool:
    """False for configs with local, sliding or sparse attention layers."""
    if any(t != "full_attention" for t in (getattr(config, "layer_types", None) or ())):
        return False
    if getattr(config, "attention_type", "original_full") == "block_sparse":
        return False
    return not getattr(config, "attention_window", None)


class MaskedLMDenoiser(SpaceDenoiser):
    """A transformers masked LM as a ``decoding.protocols.Denoiser``.

    Args (besides ``SpaceDenoiser``'s):
        model: the ``*ForMaskedLM`` module.
        prefix, suffix: model ids placed around every sequence (the tokenizer's template).

    With ``rows``, the output projection (``model.get_output_embeddings()``) is applied to the
    requested rows only: a forward pre-hook hands it their features; the transform before it
    (BERT's dense + LayerNorm) is per position and cheap.
    """

    def __init__(self, model: Any, space, tokenizer: Any, max_length: int,
                 prefix: tuple[int, ...] = (), suffix: tuple[int, ...] = ()):
        super().__init__(space, tokenizer, max_length)
        self.model = model
        self.register_buffer("_prefix", torch.tensor(prefix, dtype=torch.long), persistent=False)
        self.register_buffer("_suffix", torch.tensor(suffix, dtype=torch.long), persistent=False)
        self.supports_causal = full_attention_only(model.config)

    def _logits(self, ids: Tensor, causal: bool, rows: Tensor | None) -> Tensor:
        """Model ids (B, L') -> logits over every row of the vocabulary: (B, L', R), or (n, R)
        for the True entries of ``rows`` (B, L')."""
        mask = None
        if causal:
            dtype = next(self.model.parameters()).dtype
            mask = additive_mask(ids.shape[1], True, dtype, ids.device)
        hook, decoder = None, self.model.get_output_embeddings()
        if rows is not None and decoder is not None:
            hook = decoder.register_forward_pre_hook(
                lambda module, args: (args[0][rows], *args[1:]))
        try:
            logits = self.model(input_ids=ids, attention_mask=mask).logits
        finally:
            if hook is not None:
                hook.remove()
        if rows is not None and logits.dim() == 3:  # no separate output module to hook
            logits = logits[rows]
        return logits

    def log_probs(self, x: Tensor, t: Tensor | float, causal: bool = False,
                  rows: Tensor | None = None, cache: Any = None) -> Tensor:
        """``SpaceDenoiser.log_probs``: (B, L, V) float32, or (n, V) for ``rows``; the
        wrapper tokens are added around ``x`` and never returned. ``cache``: a
        ``decoding.cache.CacheCall`` (where the load-time probe found the model takes one)."""
        x, _ = self._check(x, t, rows)
        if causal and not self.supports_causal:
            raise ValueError(f"{type(self.model).__name__} has local or sparse attention "
                             "layers (or ignores a 4D mask): no causal (prefix-only) mode")
        if cache is not None:
            return masked_lm_cached_log_probs(self, x, causal, rows, cache)
        b, length = x.shape
        p, q = self._prefix.numel(), self._suffix.numel()
        ids = torch.cat([self._prefix.expand(b, p), self._to_model[x],
                         self._suffix.expand(b, q)], 1)
        picked = None
        if rows is not None:
            picked = torch.zeros(ids.shape, dtype=torch.bool, device=x.device)
            picked[:, p : p + length] = rows
        logits = self._logits(ids, causal, picked)
        if rows is None:
            logits = logits[:, p : p + length]
        return torch.log_softmax(self.token_space.columns(logits.float()), dim=-1)

    def probe_causal(self) -> bool:
        """Whether the model honours the 4D causal mask: changing the last token must leave
        the earlier rows unchanged."""
        a, b = self.token_space.ids[:2].tolist()
        ids = torch.tensor([[*self._prefix.tolist(), a, b, a]], device=self._prefix.device)
        other = ids.clone()
        other[0, -1] = b
        try:
            with torch.inference_mode():
                first, second = (self._logits(i, True, None)[0, :-1].float()
                                 for i in (ids, other))
        except Exception:  # a model that refuses a 4D mask has no causal mode
            return False
        return bool(torch.allclose(first, second, atol=1e-4, rtol=1e-3))


def _strict(model: Any, info: dict, shapes: dict, source: str) -> None:
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wrong = [f"{k}: {shapes[k]} in {source}, {want[k]} expected" for k in shapes
             if k in want and shapes[k] != want[k]]
    missing = sorted(info.get("missing_keys") or ())
    unexpected = sorted(k for k in info.get("unexpected_keys") or () if not _UNUSED_HEADS.search(k))
    wrong += [str(m) for m in info.get("mismatched_keys") or ()]
    found = [("missing keys", missing), ("unexpected keys", unexpected),
             ("shape mismatches", wrong)]
    if missing or unexpected or wrong:
        detail = "; ".join(f"{label}: {listing(items)}" for label, items in found if items)
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: {detail}")


def load_masked_lm(folder: Path, cfg: dict, *, device: Any = None, dtype: Any = None,
                   tokenizer: Any = "auto", add_special_tokens: bool = True,
                   attn_implementation: str = "sdpa") -> MaskedLMDenoiser:
    """Load a masked LM checkpoint folder strictly.

    Args:
        folder, cfg: the checkpoint folder and its config.json.
        device: where to place the weights.
        dtype: the weights' dtype (default: as stored).
        tokenizer: "auto" (the folder's own), a name/path or a tokenizer object; required (it
            gives the mask and the special tokens).
        add_special_tokens: wrap every sequence in the tokenizer's template ([CLS] ... [SEP]).
        attn_implementation: "sdpa" or "eager".
    """
    from transformers import AutoConfig, AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    from ..ddit.formats import resolve_tokenizer

    source = f"masked LM checkpoint {folder}"
    shapes = stored_shapes(folder)  # names and shapes from the headers; a missing shard named
    raw = resolve_tokenizer(tokenizer, folder, None)
    if raw is None or getattr(raw, "mask_token_id", None) is None:
        raise ValueError(f"{source}: a masked LM needs its tokenizer, with a mask token "
                         "(pass tokenizer=<folder or hub id>)")
    with torch.device("meta"):  # shapes checked from the headers before any tensor is read
        meta = AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(str(folder)))
    _strict(meta, {}, shapes, source)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the loading report is checked below, not printed
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(
            str(folder), dtype=parse_dtype(dtype) or "auto",
            attn_implementation=attn_implementation, trust_remote_code=False,
            output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    _strict(model, info, shapes, source)

    rows = int(model.get_input_embeddings().weight.shape[0])
    mask = int(raw.mask_token_id)
    specials = tuple(int(i) for i in raw.all_special_ids if int(i) != mask)
    space = space_for(raw, mask, rows, exclude=specials, what=source)
    prefix, suffix = wrapper_ids(raw) if add_special_tokens else ((), ())
    limit = int(getattr(model.config, "max_position_embeddings", 0) or 0) or 512
    tok_limit = getattr(raw, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < limit:
        limit = tok_limit
    den = MaskedLMDenoiser(model, space, raw, limit - len(prefix) - len(suffix), prefix, suffix)
    den = on_device(den, device)
    if den.supports_causal:
        den.supports_causal = den.probe_causal()
    if probe_cache(den):  # BERT-style encoders take transformers' cache and position ids
        den.supports_cache = ("prefix", "dual")
    return den


register(Family(
    name="masked_lm",
    claims=claims,
    load=lambda folder, cfg, **options: load_masked_lm(folder, cfg, **options),
    model_types=("bert", "distilbert", "modernbert", "roberta", "xlm-roberta"),  # and the rest
    hub_ids=("bert-base-uncased", "answerdotai/ModernBERT-base"),
))
