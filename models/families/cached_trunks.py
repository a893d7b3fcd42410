"""Dream's and LLaDA's trunks on some positions only, the other keys and values from a cache
(``decoding.cache``; the DDiT's is ``models.ddit.cached``).

Both run the positions ``pos`` (B, n) of a call: the queries, keys and values of those positions
come from their tokens with the rotary embedding at their own positions; the keys and values
are written into the layer's stored (B, kv_heads, L, d) tensors (before the grouped heads are
repeated); the queries attend to all L stored keys under the call's mask (bidirectional, or
causal). The arithmetic is the uncached forward's, so a call whose stored neighbours are up to
date returns the uncached rows.

* Dream runs on transformers' own Qwen2 modules: the model is handed a cache object whose
  ``update`` writes the layer's new keys and values at their positions and returns the whole
  stored layer, and the prepared 4D mask (by layer type), so transformers builds none.
* LLaDA's blocks (``models.families.llada_network``) are applied here step by step, as its
  ``_Block.forward`` does, with the stored keys and values in the attention.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from decoding.cache import CacheCall, KVStore, key_mask
from decoding.checks import device_check

__all__ = ["StoreCache", "additive_key_mask", "cached_log_probs", "dream_cached_features",
           "llada_cached_features", "masked_lm_cached_log_probs", "probe_cache", "store_for"]


def cached_log_probs(den, x: Tensor, causal: bool, rows: Tensor | None,
                     call: CacheCall) -> Tensor:
    """A ``SpaceDenoiser``'s packed rows ``rows`` (B, L) from the call's positions, and the one
    before them when the logits are shifted (row i is read from hidden state i-1)."""
    from .space_head import space_head_log_probs

    if rows is None:
        raise ValueError("a cached call needs rows= (the rows of its positions)")
    B, L = x.shape
    shift = int(den.shift and L > 1)
    pos = call.positions(B, L, x.device, left=shift)
    feats = den.cached_features(den._to_model[x], pos, call, causal)
    bi, r = rows.nonzero(as_tuple=True)
    j = (r - shift).clamp(min=0) - pos[bi, 0]
    device_check(((j >= 0) & (j < pos.shape[1])).all(), "a cached call was asked for rows "
                 "outside the positions it recomputes", RuntimeError)
    weight, bias = den.head()
    return space_head_log_probs(feats[bi, j][None], weight, bias, den.token_space, None,
                                den._real_ids)[0]


def store_for(call: CacheCall, n_layers: int, shape: tuple[int, ...], dtype, device) -> KVStore:
    """The call's store, or a new zero one when it has none of this shape."""
    store = call.store
    if store is None or tuple(store.layers[0][0].shape) != tuple(shape):
        store = KVStore.zeros(n_layers, shape, dtype, device)
    call.store = store
    return store


def additive_key_mask(pos: Tensor, length: int, causal: bool, dtype) -> Tensor:
    """(B, 1, n, L) additive mask over the stored keys: 0 where allowed, the dtype's minimum
    elsewhere (all zeros when bidirectional: an explicit mask keeps transformers bidirectional)."""
    allowed = key_mask(pos, length, causal, None)
    mask = torch.zeros(pos.shape[0], 1, pos.shape[1], length, dtype=dtype, device=pos.device)
    if allowed is not None:
        mask = mask.masked_fill(~allowed, torch.finfo(dtype).min)
    return mask


class StoreCache:
    """transformers' cache interface over a ``KVStore``: ``update`` writes the new keys and
    values at their positions and returns the whole stored layer."""

    is_compileable = False

    def __init__(self, store: KVStore, pos: Tensor):
        self.store = store
        self.index = pos[:, None, :, None]

    def update(self, key_states: Tensor, value_states: Tensor, layer_idx: int,
               *args, **kwargs) -> tuple[Tensor, Tensor]:
        keys, values = self.store.layers[layer_idx]
        index = self.index.expand(-1, key_states.shape[1], -1, key_states.shape[-1])
        keys.scatter_(2, index, key_states.to(keys.dtype))
        values.scatter_(2, index, value_states.to(values.dtype))
        return keys, values

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.store.layers[layer_idx][0].shape[2]


def dream_cached_features(model, ids: Tensor, pos: Tensor, call: CacheCall,
                          causal: bool) -> Tensor:
    """Qwen2 ``model`` (transformers) on model ids (B, L) at positions ``pos`` -> (B, n, H)."""
    cfg = model.config
    B, L = ids.shape
    dtype = model.embed_tokens.weight.dtype
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    shape = (B, cfg.num_key_value_heads, L, head_dim)
    store = store_for(call, cfg.num_hidden_layers, shape, dtype, ids.device)
    mask = additive_key_mask(pos, L, causal, dtype)
    kinds = set(getattr(cfg, "layer_types", None) or ["full_attention"])
    out = model(input_ids=ids.gather(1, pos), position_ids=pos,
                attention_mask={k: mask for k in kinds}, cache=StoreCache(store, pos),
                use_cache=False)
    call.tokens = pos.numel()
    return out.last_hidden_state


def _llada_block(block, x: Tensor, sin: Tensor, cos: Tensor, kv: list[Tensor], index: Tensor,
                 mask: Tensor | None) -> Tensor:
    from .llada_network import _activation

    s = block.shape
    B, T, d = x.shape
    q, k, v = block.qkv(x, sin, cos)
    keys, values = kv
    at = index.expand(-1, s.n_kv_heads, -1, s.head_dim)
    keys.scatter_(2, at, k.to(keys.dtype))
    values.scatter_(2, at, v.to(values.dtype))
    if s.n_kv_heads != s.n_heads:
        rep = s.n_heads // s.n_kv_heads
        keys, values = keys.repeat_interleave(rep, dim=1), values.repeat_interleave(rep, dim=1)
    att = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
    x = x + block.attn_out(att.transpose(1, 2).reshape(B, T, d))
    h = block.ff_norm(x)
    a = _activation(s.activation_type, block.ff_proj(h))
    if s.block_type == "llama":
        a = a * block.up_proj(h)
    return x + block.ff_out(a)


def llada_cached_features(network, ids: Tensor, pos: Tensor, call: CacheCall,
                          causal: bool) -> Tensor:
    """``LLaDANetwork.features`` at positions ``pos`` (B, n) of model ids (B, L) -> (B, n, d)."""
    from .llada_network import rope_tables

    tr, s = network.model.transformer, network.shape
    B, L = ids.shape
    store = store_for(call, s.n_layers, (B, s.n_kv_heads, L, s.head_dim), tr.wte.weight.dtype,
                      ids.device)
    x = tr.wte(ids.gather(1, pos))
    if s.input_emb_norm:
        x = x * (s.d_model ** 0.5)
    sin, cos = rope_tables(s, L, ids.device)
    sin, cos = sin[0, 0][pos][:, None], cos[0, 0][pos][:, None]  # (B, 1, n, d)
    mask = key_mask(pos, L, causal, None)
    index = pos[:, None, :, None]
    for block, kv in zip(tr.blocks, store.layers):
        x = _llada_block(block, x, sin, cos, kv, index, mask)
    x = tr.ln_f(x)
    if s.scale_logits:
        x = x / math.sqrt(s.d_model)
    call.tokens = pos.numel()
    return x


def masked_lm_cached_log_probs(den, x: Tensor, causal: bool, rows: Tensor | None,
                               call: CacheCall) -> Tensor:
    """A ``MaskedLMDenoiser``'s packed rows from the call's positions: transformers' encoder
    (BERT-style: ``cache`` and ``position_ids`` arguments, one attention module per layer)
    handed a ``StoreCache`` and the 4D mask over every stored key. The template's tokens
    ([CLS], [SEP]) are stored at the refresh and never recomputed after it."""
    if rows is None:
        raise ValueError("a cached call needs rows= (the rows of its positions)")
    B, L = x.shape
    p, q = den._prefix.numel(), den._suffix.numel()
    ids = torch.cat([den._prefix.expand(B, p), den._to_model[x], den._suffix.expand(B, q)], 1)
    width = ids.shape[1]
    if call.start is None:
        pos = torch.arange(width, device=x.device).expand(B, width)
    else:
        pos = call.positions(B, L, x.device) + p
    cfg = den.model.config
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    dtype = next(den.model.parameters()).dtype
    store = store_for(call, cfg.num_hidden_layers,
                      (B, getattr(cfg, "num_key_value_heads", heads), width, head_dim), dtype,
                      x.device)
    bi, r = rows.nonzero(as_tuple=True)
    j = r + p - pos[bi, 0]
    device_check(((j >= 0) & (j < pos.shape[1])).all(), "a cached call was asked for rows "
                 "outside the positions it recomputes", RuntimeError)
    decoder = den.model.get_output_embeddings()
    hook = None if decoder is None else decoder.register_forward_pre_hook(
        lambda module, args: (args[0][bi, j], *args[1:]))
    try:
        logits = den.model(input_ids=ids.gather(1, pos), position_ids=pos,
                           attention_mask=additive_key_mask(pos, width, causal, dtype),
                           cache=StoreCache(store, pos)).logits
    finally:
        if hook is not None:
            hook.remove()
    if decoder is None:
        logits = logits[bi, j]
    call.tokens = pos.numel()
    return torch.log_softmax(den.token_space.columns(logits.float()), dim=-1)


def probe_cache(den) -> bool:
    """Whether a denoiser's cached calls give its uncached rows: a refresh, then a call over a
    middle position with the same tokens (a model whose layers ignore the store, or number
    positions their own way, fails)."""
    device = next(den.parameters()).device
    x = torch.tensor([[0, 1, den.mask_id, 0, 1]], device=device)  # engine ids: real tokens
    rows = torch.zeros_like(x, dtype=torch.bool)
    rows[0, 2] = True
    t = torch.ones(1, device=device)
    try:
        with torch.inference_mode():
            want = den.log_probs(x, t, rows=rows)
            call = CacheCall(None, None, 5)
            first = den.log_probs(x, t, rows=rows, cache=call)
            again = den.log_probs(x, t, rows=rows,
                                  cache=CacheCall(call.store, torch.tensor([2], device=device), 1))
    except Exception:  # a model that takes no cache or mask this way has no cached mode
        return False
    return bool(torch.allclose(first, want, atol=1e-4, rtol=1e-3)
                and torch.allclose(again, want, atol=1e-4, rtol=1e-3))
