"""The DDiT trunk on some positions only, with the keys and values of the others from a cache.

``decoding.cache`` describes the protocol. Here the positions ``pos`` (B, n) of a call are run
through every block: their queries, keys and values are computed from their tokens (rotary
embedding at their own positions), the keys and values are written into the layer's stored
(B, heads, L, d) tensors at those positions, and the queries attend to all L stored keys,
under the attention mask of the call (none: bidirectional; causal; BD3-LM's block-causal).
A refresh runs every position into a new (or the given) store. The arithmetic is that of
``models.ddit.backbone`` (the same modules and weights), so a call over positions whose
stored neighbours are up to date gives the uncached output.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from decoding.cache import CacheCall, KVStore, key_mask

from .backbone import DDiT, _apply_rotary, _modulate

__all__ = ["cached_features"]


def _block(block, h: Tensor, rope: tuple[Tensor, Tensor], c: Tensor, kv: list[Tensor],
           index: Tensor, mask: Tensor | None) -> Tensor:
    """One DDiT block on (B, n, H) ``h`` at positions ``index`` (B, heads, n, d)."""
    b, n, width = h.shape
    shift1, scale1, gate1, shift2, scale2, gate2 = block.adaLN_modulation(c).chunk(6, dim=-1)
    qkv = block.attn_qkv(_modulate(block.norm1(h), shift1, scale1))
    qkv = qkv.view(b, n, 3, block.n_heads, width // block.n_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # each (B, heads, n, d)
    cos, sin = rope
    q, k = _apply_rotary(q, cos, sin), _apply_rotary(k, cos, sin)
    keys, values = kv
    keys.scatter_(2, index, k.to(keys.dtype))
    values.scatter_(2, index, v.to(values.dtype))
    att = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
    att = att.transpose(1, 2).reshape(b, n, width)
    h = h + gate1[:, None] * block.attn_out(att)
    y = block.mlp(_modulate(block.norm2(h), shift2, scale2))
    return h + gate2[:, None] * y


def cached_features(net: DDiT, x: Tensor, sigma: Tensor, call: CacheCall, causal: bool = False,
                    block_size: int | None = None) -> tuple[Tensor, Tensor]:
    """The output layer's features at the call's positions.

    Args:
        net: the backbone.
        x: (B, L) long token ids (the mask being the last row).
        sigma: (B,) the noise input.
        call: the cache call (``call.store`` is created when None, and written in place).
        causal: lower-triangular attention (DCD's prefix-only pass).
        block_size: block-causal attention with blocks of this size (BD3-LM); None: none.

    Returns:
        (B, n, H) features for the positions ``call.positions(B, L)``, and those positions.
    """
    B, L = x.shape
    if L > net.config.max_length:
        raise ValueError(f"sequence length {L} exceeds max_length {net.config.max_length}")
    cfg = net.config
    pos = call.positions(B, L, x.device)
    dtype = net.vocab_embed.embedding.dtype
    shape = (B, cfg.n_heads, L, cfg.head_dim)
    store = call.store
    if store is None or tuple(store.layers[0][0].shape) != shape:
        store = KVStore.zeros(cfg.n_blocks, shape, dtype, x.device)
    call.store = store
    h = net.vocab_embed(x.gather(1, pos))
    c = F.silu(net.sigma_map(sigma.reshape(-1)))
    cos, sin = net.rotary_emb(L, x.device)
    rope = (cos[pos][:, None], sin[pos][:, None])  # (B, 1, n, d)
    index = pos[:, None, :, None].expand(B, cfg.n_heads, pos.shape[1], cfg.head_dim)
    mask = key_mask(pos, L, causal, block_size)
    for blk, kv in zip(net.blocks, store.layers):
        h = _block(blk, h, rope, c, kv, index, mask)
    call.tokens = pos.numel()
    return net.output_layer.features(h, c), pos
