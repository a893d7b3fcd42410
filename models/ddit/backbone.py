"""The DDiT backbone shared by SEDD (Lou et al. 2024) and MDLM (Sahoo et al. 2024).

A pre-norm transformer whose LayerNorms are modulated by a noise-level embedding (adaLN, as in
DiT, Peebles & Xie 2023), with rotary position embeddings and no position table. Parameter names
and shapes follow the public checkpoints exactly (``louaaron/sedd-small``, ``sedd-medium``,
``kuleshov-group/mdlm-owt`` without its ``backbone.`` prefix) so their state dicts load strictly:

    vocab_embed.embedding                     (V+1, H)   bare parameter
    sigma_map.mlp.{0,2}.{weight,bias}         Linear 256->C, SiLU, Linear C->C (then SiLU outside)
    rotary_emb.inv_freq                       (head_dim/2,)
    blocks.N.norm1.weight / norm2.weight      (H,)       LayerNorm without bias
    blocks.N.attn_qkv.weight                  (3H, H)    rows: Q, then K, then V; no bias
    blocks.N.attn_out.weight                  (H, H)     no bias
    blocks.N.mlp.{0,2}.{weight,bias}          H->4H, tanh-GELU, 4H->H
    blocks.N.adaLN_modulation.{weight,bias}   (6H, C)    shift/scale/gate (attn), then (mlp)
    output_layer.norm_final.weight            (H,)
    output_layer.adaLN_modulation.*           (2H, C)    shift, scale
    output_layer.linear.{weight,bias}         (V+1, H)

The backbone returns raw logits; the SEDD/MDLM output heads live in ``models.ddit.heads``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DDiT", "DDiTConfig", "rotary_inv_freq"]

# LayerNorm epsilon of the public checkpoints (torch's default).
_LN_EPS = 1e-5
_FREQ_DIM = 256
_ROTARY_BASE = 10_000.0


@dataclass
class DDiTConfig:
    """Shape of a DDiT.

    Attributes:
        vocab_size: number of output rows, *including* the mask state (V+1; 50258 for GPT-2).
        hidden_size: H, the residual width.
        cond_dim: C, the width of the noise-level embedding.
        n_blocks: number of transformer blocks.
        n_heads: attention heads (head size H / n_heads, must be even for rotary).
        max_length: longest sequence accepted.
        dropout: residual dropout (training only; attention itself has none, as in the originals).
    """

    vocab_size: int = 50258
    hidden_size: int = 768
    cond_dim: int = 128
    n_blocks: int = 12
    n_heads: int = 12
    max_length: int = 1024
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "cond_dim", "n_blocks", "n_heads", "max_length"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"DDiTConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.vocab_size < 2:
            raise ValueError("DDiTConfig.vocab_size counts the mask row too, so it must be >= 2")
        if self.hidden_size % self.n_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by n_heads {self.n_heads}"
            )
        if (self.hidden_size // self.n_heads) % 2:
            raise ValueError("the head size must be even for the rotary embedding")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.n_heads


def rotary_inv_freq(head_dim: int, base: float = _ROTARY_BASE) -> Tensor:
    """(head_dim/2,) float32 inverse frequencies base^(-2i/head_dim)."""
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def _no_autocast(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x (B, L, H) * (1 + scale (B, H)) + shift (B, H)."""
    return x * (1 + scale[:, None]) + shift[:, None]


class _LayerNorm(nn.Module):
    """Weight-only LayerNorm computed in float32 even under autocast (as the originals do)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        with _no_autocast(x.device):
            y = F.layer_norm(x.float(), (self.dim,), eps=_LN_EPS) * self.weight.float()
        # Under autocast the residual stream is float32, so this keeps float32 there; a model
        # cast wholesale to bf16 gets bf16 back, as its Linear layers expect.
        return y.to(x.dtype)


class _VocabEmbed(nn.Module):
    def __init__(self, rows: int, dim: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(rows, dim))
        nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        return self.embedding[x]


class _SigmaMap(nn.Module):
    """Sinusoidal features of the noise level (cos half first, max period 10^4) -> MLP -> (B, C)."""

    def __init__(self, cond_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(_FREQ_DIM, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim)
        )

    def forward(self, sigma: Tensor) -> Tensor:
        half = _FREQ_DIM // 2
        freqs = torch.exp(
            -math.log(10_000.0)
            * torch.arange(half, dtype=torch.float32, device=sigma.device)
            / half
        )
        args = sigma.float()[:, None] * freqs[None]
        feats = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        # The originals run this outside their bf16 autocast region: keep it in full precision.
        with _no_autocast(sigma.device):
            return self.mlp(feats.to(self.mlp[0].weight.dtype))


class _Rotary(nn.Module):
    def __init__(self, head_dim: int):
        super().__init__()
        # Persistent: the public checkpoints carry it, and strict loading expects it.
        self.register_buffer("inv_freq", rotary_inv_freq(head_dim))

    def forward(self, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """cos, sin of shape (L, head_dim), float32, frequencies repeated over both halves."""
        pos = torch.arange(length, device=device, dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq.float().to(device))
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos(), emb.sin()


def _apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Split-half ("rotate_half", GPT-NeoX) rotary on x (B, heads, L, d); math in float32."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)


class _Block(nn.Module):
    def __init__(self, cfg: DDiTConfig):
        super().__init__()
        h, c = cfg.hidden_size, cfg.cond_dim
        self.n_heads = cfg.n_heads
        self.dropout = cfg.dropout
        self.norm1 = _LayerNorm(h)
        self.attn_qkv = nn.Linear(h, 3 * h, bias=False)
        self.attn_out = nn.Linear(h, h, bias=False)
        self.norm2 = _LayerNorm(h)
        self.mlp = nn.Sequential(
            nn.Linear(h, 4 * h), nn.GELU(approximate="tanh"), nn.Linear(4 * h, h)
        )
        self.adaLN_modulation = nn.Linear(c, 6 * h)
        # DiT's adaLN-zero start: every block begins as the identity.
        nn.init.zeros_(self.adaLN_modulation.weight)
        nn.init.zeros_(self.adaLN_modulation.bias)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], c: Tensor, causal: bool,
                attn_mask: Tensor | None = None) -> Tensor:
        """x (B, L, H), c (B, C), optional (L, L) bool ``attn_mask`` (True: attend) -> (B, L, H)."""
        b, length, h = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=-1)

        qkv = self.attn_qkv(_modulate(self.norm1(x), shift1, scale1))
        qkv = qkv.view(b, length, 3, self.n_heads, h // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, L, d)
        cos, sin = rope
        q, k = _apply_rotary(q, cos, sin), _apply_rotary(k, cos, sin)
        if attn_mask is None:
            att = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        else:
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        att = att.transpose(1, 2).reshape(b, length, h)
        drop = self.dropout if self.training else 0.0
        x = x + gate1[:, None] * F.dropout(self.attn_out(att), drop, self.training)

        y = self.mlp(_modulate(self.norm2(x), shift2, scale2))
        return x + gate2[:, None] * F.dropout(y, drop, self.training)


class _OutputLayer(nn.Module):
    def __init__(self, cfg: DDiTConfig):
        super().__init__()
        self.norm_final = _LayerNorm(cfg.hidden_size)
        self.linear = nn.Linear(cfg.hidden_size, cfg.vocab_size)
        self.adaLN_modulation = nn.Linear(cfg.cond_dim, 2 * cfg.hidden_size)
        for p in (*self.linear.parameters(), *self.adaLN_modulation.parameters()):
            nn.init.zeros_(p)

    def features(self, x: Tensor, c: Tensor) -> Tensor:
        """(B, L, H) trunk output -> (B, L, H) modulated features the linear head reads."""
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return _modulate(self.norm_final(x), shift, scale)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        return self.linear(self.features(x, c))


class DDiT(nn.Module):
    """The diffusion transformer. ``forward(x, sigma, causal)`` -> raw logits over V+1 rows.

    Initialisation follows the originals (adaLN and output projection start at zero), which is
    what training from scratch wants; loaded checkpoints overwrite everything.
    """

    def __init__(self, config: DDiTConfig):
        super().__init__()
        self.config = config
        self.vocab_embed = _VocabEmbed(config.vocab_size, config.hidden_size)
        self.sigma_map = _SigmaMap(config.cond_dim)
        self.rotary_emb = _Rotary(config.head_dim)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_blocks))
        self.output_layer = _OutputLayer(config)

    def forward(self, x: Tensor, sigma: Tensor, causal: bool = False,
                attn_mask: Tensor | None = None) -> Tensor:
        """Raw logits (B, L, vocab_size) float32 (arguments as ``trunk``)."""
        h, c = self.trunk(x, sigma, causal, attn_mask)
        return self.output_layer(h, c).float()

    def head_features(self, x: Tensor, sigma: Tensor, causal: bool = False,
                      attn_mask: Tensor | None = None) -> Tensor:
        """(B, L, H) features before the output projection ``output_layer.linear``.

        Callers that need only some rows, or the logits in chunks, apply the projection
        themselves (``models.ddit.heads``): the (B, L, vocab_size) logits are the largest
        tensor of a forward.
        """
        h, c = self.trunk(x, sigma, causal, attn_mask)
        return self.output_layer.features(h, c)

    def trunk(self, x: Tensor, sigma: Tensor, causal: bool = False,
              attn_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The transformer without its output layer.

        Args:
            x: (B, L) long token ids in ``0 .. vocab_size-1`` (the last one being the mask).
            sigma: (B,) float noise level fed to the adaLN conditioning (total noise σ(t) for
                SEDD and time-conditioned MDLM; zeros for MDLM without time conditioning).
            causal: if True, position i attends to positions <= i only (lower-triangular mask,
                same weights); DCD uses this for prefix-only marginals.
            attn_mask: optional (L, L) bool, True where query i may attend to key j (BD3-LM's
                block-causal mask); combined with ``causal`` when both are given. None (the
                default) keeps the plain full or causal attention.

        Returns:
            (B, L, H) hidden states and (B, C) conditioning, in the weights' dtype.
        """
        if x.dim() != 2:
            raise ValueError(f"x must be (B, L), got shape {tuple(x.shape)}")
        if x.shape[1] > self.config.max_length:
            raise ValueError(
                f"sequence length {x.shape[1]} exceeds max_length {self.config.max_length}"
            )
        sigma = sigma.reshape(-1)
        if sigma.shape[0] != x.shape[0]:
            raise ValueError(f"sigma must be (B,) = ({x.shape[0]},), got {tuple(sigma.shape)}")
        h = self.vocab_embed(x)
        c = F.silu(self.sigma_map(sigma))
        rope = self.rotary_emb(x.shape[1], x.device)
        if attn_mask is not None:
            n = x.shape[1]
            if attn_mask.shape != (n, n) or attn_mask.dtype != torch.bool:
                raise ValueError(f"attn_mask must be a ({n}, {n}) bool tensor, got "
                                 f"{attn_mask.dtype} {tuple(attn_mask.shape)}")
            attn_mask = attn_mask.to(x.device)
            if causal:
                attn_mask = attn_mask.tril()
        for block in self.blocks:
            h = block(h, rope, c, causal, attn_mask)
        return h, c
