"""LLaDA's transformer (Nie et al. 2025; the OLMo-derived ``modeling_llada.py`` of the hub repos),
rewritten small: the same parameter names and the same arithmetic, inference only.

Module tree (state-dict keys under the checkpoint's ``model.`` prefix):
``transformer.wte`` (embedding_size rows), ``transformer.blocks.N.*``, ``transformer.ln_f``,
``transformer.ff_out`` (absent with ``weight_tying``). A ``llama`` block has ``attn_norm``,
``q_proj``, ``k_proj``, ``v_proj``, ``attn_out``, ``ff_norm``, ``ff_proj``, ``up_proj``,
``ff_out``: x + attn_out(attn(attn_norm(x))), then + ff_out(act(ff_proj(h)) * up_proj(h)) with
h = ff_norm(x). A ``sequential`` block fuses q, k, v into ``att_proj`` (split as d_model, kv, kv)
and has no ``up_proj`` (ff_out(act(ff_proj(h))), SwiGLU splitting ff_proj's output in two: value
first, gate second). ``q_norm`` / ``k_norm`` exist with ``attention_layer_norm``.

Arithmetic as the authors': norms in float32 then back to the input dtype ("rms": weight·x
(+bias), eps ``rms_norm_eps``; "gemma_rms": x·(1+weight); "default": torch's layer_norm with
eps 1e-5); RoPE over the whole head (head = d_model / n_heads) with frequencies
theta^(-2j/head), the rotation on halves (rotate_half), applied in float32 when
``rope_full_precision``; GQA by repeating each key/value head over consecutive query heads;
scaled dot-product attention with no mask (bidirectional); ``input_emb_norm`` scales the
embeddings by sqrt(d_model); ``scale_logits`` divides the logits by sqrt(d_model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LLaDANetwork", "LLaDAShape"]


@dataclass(frozen=True)
class LLaDAShape:
    """What the network needs from a LLaDA config.json (see ``models.families.llada``)."""

    d_model: int
    n_heads: int
    n_kv_heads: int
    n_layers: int
    mlp_hidden_size: int
    embedding_size: int
    activation_type: str = "swiglu"
    block_type: str = "sequential"
    layer_norm_type: str = "default"
    layer_norm_with_affine: bool = True
    bias_for_layer_norm: bool = False
    attention_layer_norm: bool = False
    attention_layer_norm_with_affine: bool = True
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_full_precision: bool = True
    include_bias: bool = False
    include_qkv_bias: bool = False
    input_emb_norm: bool = False
    scale_logits: bool = False
    weight_tying: bool = True

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ff_out_features(self) -> int:
        """The MLP's inner width after the activation (SwiGLU halves it)."""
        return self.mlp_hidden_size // 2 if self.activation_type == "swiglu" else \
            self.mlp_hidden_size


class _Norm(nn.Module):
    def __init__(self, shape: LLaDAShape, size: int, affine: bool):
        super().__init__()
        self.kind, self.size = shape.layer_norm_type, size
        self.eps = 1e-5 if self.kind in ("default", "low_precision") else shape.rms_norm_eps
        self.weight = nn.Parameter(torch.ones(size)) if affine else None
        use_bias = affine and shape.bias_for_layer_norm
        self.bias = nn.Parameter(torch.zeros(size)) if use_bias else None

    def forward(self, x: Tensor) -> Tensor:
        if self.kind in ("default", "low_precision"):
            return F.layer_norm(x, (self.size,), self.weight, self.bias, self.eps)
        dtype = x.dtype
        h = x.float()
        h = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).to(dtype)
        if self.weight is None:
            return h
        scale = self.weight if self.kind == "rms" else 1 + self.weight
        h = h * scale
        return h if self.bias is None else h + self.bias


def _activation(kind: str, x: Tensor) -> Tensor:
    if kind == "swiglu":
        value, gate = x.chunk(2, dim=-1)
        return F.silu(gate) * value
    return {"silu": F.silu, "relu": F.relu, "gelu": F.gelu}[kind](x)


def rope_tables(shape: LLaDAShape, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(sin, cos), each (1, 1, length, head_dim) float32."""
    dim = shape.head_dim
    inv_freq = 1.0 / (shape.rope_theta ** (torch.arange(0, dim, 2, device=device,
                                                        dtype=torch.float) / dim))
    freqs = torch.outer(torch.arange(length, device=device, dtype=torch.float), inv_freq)
    pos = torch.cat([freqs, freqs], dim=-1)
    return pos.sin()[None, None], pos.cos()[None, None]


def _rotate(t: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    half = t.shape[-1] // 2
    turned = torch.cat([-t[..., half:], t[..., :half]], dim=-1)
    return t * cos + turned * sin


class _Block(nn.Module):
    def __init__(self, shape: LLaDAShape):
        super().__init__()
        self.shape = shape
        d, kv = shape.d_model, shape.n_kv_heads * shape.head_dim
        qkv_bias = shape.include_bias or shape.include_qkv_bias
        self.attn_norm = _Norm(shape, d, shape.layer_norm_with_affine)
        self.ff_norm = _Norm(shape, d, shape.layer_norm_with_affine)
        if shape.attention_layer_norm:
            self.q_norm = _Norm(shape, d, shape.attention_layer_norm_with_affine)
            self.k_norm = _Norm(shape, kv, shape.attention_layer_norm_with_affine)
        if shape.block_type == "llama":
            self.q_proj = nn.Linear(d, d, bias=qkv_bias)
            self.k_proj = nn.Linear(d, kv, bias=qkv_bias)
            self.v_proj = nn.Linear(d, kv, bias=qkv_bias)
            self.up_proj = nn.Linear(d, shape.mlp_hidden_size, bias=shape.include_bias)
        else:
            self.att_proj = nn.Linear(d, d + 2 * kv, bias=qkv_bias)
        self.ff_proj = nn.Linear(d, shape.mlp_hidden_size, bias=shape.include_bias)
        self.attn_out = nn.Linear(d, d, bias=shape.include_bias)
        self.ff_out = nn.Linear(shape.ff_out_features, d, bias=shape.include_bias)

    def qkv(self, x: Tensor, sin: Tensor, cos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, T, d) -> q (B, heads, T, hd), k and v (B, kv_heads, T, hd), rotary applied."""
        s = self.shape
        B, T, d = x.shape
        h = self.attn_norm(x)
        if s.block_type == "llama":
            q, k, v = self.q_proj(h), self.k_proj(h), self.v_proj(h)
        else:
            kv = s.n_kv_heads * s.head_dim
            q, k, v = self.att_proj(h).split((d, kv, kv), dim=-1)
        if s.attention_layer_norm:
            q, k = self.q_norm(q).to(k.dtype), self.k_norm(k).to(k.dtype)
        q = q.view(B, T, s.n_heads, s.head_dim).transpose(1, 2)
        k = k.view(B, T, s.n_kv_heads, s.head_dim).transpose(1, 2)
        v = v.view(B, T, s.n_kv_heads, s.head_dim).transpose(1, 2)
        if s.rope_full_precision:
            q, k = _rotate(q.float(), sin, cos).type_as(q), _rotate(k.float(), sin, cos).type_as(k)
        else:
            q, k = _rotate(q, sin.type_as(q), cos.type_as(q)), _rotate(k, sin.type_as(k),
                                                                       cos.type_as(k))
        return q, k, v

    def forward(self, x: Tensor, sin: Tensor, cos: Tensor, causal: bool) -> Tensor:
        s = self.shape
        B, T, d = x.shape
        q, k, v = self.qkv(x, sin, cos)
        if s.n_kv_heads != s.n_heads:
            rep = s.n_heads // s.n_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        x = x + self.attn_out(att.transpose(1, 2).reshape(B, T, d))
        h = self.ff_norm(x)
        a = _activation(s.activation_type, self.ff_proj(h))
        if s.block_type == "llama":
            a = a * self.up_proj(h)
        return x + self.ff_out(a)


class _Transformer(nn.Module):
    def __init__(self, shape: LLaDAShape):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(shape.embedding_size, shape.d_model),
            blocks=nn.ModuleList(_Block(shape) for _ in range(shape.n_layers)),
            ln_f=_Norm(shape, shape.d_model, shape.layer_norm_with_affine),
        ))
        if not shape.weight_tying:
            self.transformer["ff_out"] = nn.Linear(shape.d_model, shape.embedding_size,
                                                   bias=shape.include_bias)


class LLaDANetwork(nn.Module):
    """LLaDA's ``LLaDAModelLM`` without the wrapper: ``model.transformer.*`` as on the hub."""

    def __init__(self, shape: LLaDAShape):
        super().__init__()
        self.shape = shape
        self.model = _Transformer(shape)

    def features(self, ids: Tensor, causal: bool = False) -> Tensor:
        """(B, L) model ids -> (B, L, d_model) hidden states after ``ln_f``."""
        tr, s = self.model.transformer, self.shape
        x = tr.wte(ids)
        if s.input_emb_norm:
            x = x * (s.d_model ** 0.5)
        sin, cos = rope_tables(s, ids.shape[1], ids.device)
        for block in tr.blocks:
            x = block(x, sin, cos, causal)
        x = tr.ln_f(x)
        if s.scale_logits:  # logits / sqrt(d): the head is linear, so scale what it reads
            x = x / math.sqrt(s.d_model)
        return x

    def head(self) -> tuple[Tensor, Tensor | None]:
        tr, s = self.model.transformer, self.shape
        if s.weight_tying:
            return tr.wte.weight, None
        bias = tr.ff_out.bias
        if bias is not None and s.scale_logits:
            bias = bias / math.sqrt(s.d_model)
        return tr.ff_out.weight, bias
