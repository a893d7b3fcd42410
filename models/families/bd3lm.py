"""BD3-LM (Arriola et al. 2025, "Block Diffusion: Interpolating Between Autoregressive and
Diffusion Language Models"): the DDiT of SEDD/MDLM with block-causal attention.

Hub: ``kuleshov-group/bd3lm-owt-block_size{4,8,16}`` (remote code ``BD3LM``); the authors'
code is ``kuleshov-group/bd3lms`` (``models/hf/modeling_bd3lm.py``, ``diffusion.py``).

Checkpoint layout, read without remote code:

* ``config.json``: ``model_type: "bd3lm"``, ``block_size``, ``vocab_size`` (50258: GPT-2's
  50257 plus the mask), ``model_length`` (1024), ``hidden_dim``, ``cond_dim``, ``n_blocks``,
  ``n_heads``, ``time_conditioning`` (false for the public checkpoints), ``adaln`` (true),
  ``cross_attn`` (true: the block mask), ``causal`` (false), ``var_min``.
* ``model.safetensors`` (float32): the backbone under ``backbone.`` with MDLM's DDiT names
  (``vocab_embed.embedding``, ``sigma_map.mlp.{0,2}``, ``rotary_emb.inv_freq``,
  ``blocks.N.{norm1, attn_qkv, attn_out, norm2, mlp.{0,2}, adaLN_modulation}``,
  ``output_layer.{norm_final, linear, adaLN_modulation}``), and with ``var_min`` two scalars
  ``sampling_eps_min`` / ``sampling_eps_max`` (training's clipped noise range; read, unused).

Conventions (``modeling_bd3lm.py``): at sampling time (``sample_mode``, no KV cache) the model
attends with the x0 quadrant of its training mask, ``block_q >= block_kv``: every position sees
its own block whole and every earlier block, never a later one. The authors feed only the
blocks up to the current one; since nothing attends forward, a full-length forward under this
mask gives every block exactly that output. Output: SUBS (the mask column removed, normalised),
no shift. Noise input: σ(t) = -log(1 - (1-ε)t) of the log-linear schedule, zeroed when
``time_conditioning`` is false (the public checkpoints). Mask id: the tokenizer's mask token,
else ``vocab_size - 1`` (the authors set ``mask_index = vocab_size`` of a tokenizer without
one: GPT-2's 50257). The natural strategy is ``decoding.strategies.Blocks`` with
``block_length = block_size``: the model was trained on clean earlier blocks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from decoding.cache import CacheCall, rows_at
from decoding.checks import device_check
from decoding.schedules import EPS, LogLinear

from ..ddit.backbone import DDiT, DDiTConfig, rotary_inv_freq
from ..ddit.cached import cached_features
from ..ddit.formats import resolve_tokenizer
from ..hub import CheckpointError, listing, load_into, read_weights
from ..registry import Family, register
from ._common import on_device, space_for
from .space_head import space_head_log_probs
from .token_space_denoiser import SpaceDenoiser

__all__ = ["BD3LMDenoiser", "block_causal_mask", "load_bd3lm"]

HUB_IDS = tuple(f"kuleshov-group/bd3lm-owt-block_size{n}" for n in (4, 8, 16))
_SHAPE_KEYS = dict(vocab_size="vocab_size", hidden_size="hidden_dim", cond_dim="cond_dim",
                   n_blocks="n_blocks", n_heads="n_heads", max_length="model_length")
_SCALARS = ("sampling_eps_min", "sampling_eps_max")
_PUBLIC_TOKENIZER = "gpt2"


def claims(cfg: dict, files: set[str]) -> bool:
    return cfg.get("model_type") == "bd3lm"


def block_causal_mask(length: int, block_size: int, device: Any = None) -> Tensor:
    """(L, L) bool, True where query i may attend key j: block(j) <= block(i)."""
    block = torch.arange(length, device=device) // block_size
    return block[None, :] <= block[:, None]


class BD3LMDenoiser(SpaceDenoiser):
    """BD3-LM as a ``decoding.protocols.Denoiser`` (block-causal attention, SUBS output).

    Attributes:
        block_size: the block length it was trained with (the Blocks strategy's
            ``block_length``).
        block_attention: False for a checkpoint trained without the block mask
            (``cross_attn: false``): full attention then.

    ``causal=True`` uses a lower-triangular mask (inside the block-causal one), same weights.

    KV cache (``decoding.cache``): under the block-causal mask a finished block's keys and
    values never change, so the cache is exact; the engine recomputes from the first block
    that changed (BD3-LM's ``store_kv`` pass) through the current one.
    """

    supports_cache = ("prefix", "dual")

    def __init__(self, backbone: DDiT, space, tokenizer: Any, block_size: int,
                 time_conditioning: bool, eps: float = EPS, block_attention: bool = True):
        super().__init__(space, tokenizer, backbone.config.max_length)
        self.backbone = backbone
        self.block_size = int(block_size)
        self.block_attention = bool(block_attention)
        self.time_conditioned = bool(time_conditioning)
        self.eps = float(eps)
        self.schedule = LogLinear(self.eps)

    def noise_input(self, t: Tensor) -> Tensor:
        """(B,) time -> (B,) σ(t), or zeros without time conditioning (as the authors)."""
        if not self.time_conditioned:
            return torch.zeros_like(t, dtype=torch.float32)
        return self.schedule.sigma(t)

    def cache_block(self, causal: bool) -> int | None:
        """Keys seen by a query: its block and the earlier ones (exact cache), or fewer."""
        return 1 if causal else (self.block_size if self.block_attention else None)

    def log_probs(self, x: Tensor, t: Tensor | float, causal: bool = False,
                  rows: Tensor | None = None, cache: CacheCall | None = None) -> Tensor:
        """log p(x0_i = v | x_t) over the V real tokens (``SpaceDenoiser.log_probs``'s
        arguments and output); the network takes the noise level, so ``t`` is used here.
        ``cache``: a ``decoding.cache.CacheCall`` (its positions only, packed ``rows``)."""
        x, t = self._check(x, t, rows)
        if t.numel():
            ends = torch.stack([t.min(), t.max()])
            device_check((ends[0] >= 0) & (ends[1] <= 1), lambda: (
                f"t must lie in [0, 1], got values in [{float(ends[0])}, {float(ends[1])}]"))
        linear = self.backbone.output_layer.linear
        if cache is not None:
            block = self.block_size if self.block_attention else None
            feats, pos = cached_features(self.backbone, self._to_model[x], self.noise_input(t),
                                         cache, causal, block)
            return space_head_log_probs(feats, linear.weight, linear.bias, self.token_space,
                                        rows_at(rows, pos), self._real_ids)
        mask = (block_causal_mask(x.shape[1], self.block_size, x.device)
                if self.block_attention else None)
        feats = self.backbone.head_features(self._to_model[x], self.noise_input(t),
                                            causal=causal, attn_mask=mask)
        return space_head_log_probs(feats, linear.weight, linear.bias, self.token_space, rows,
                                    self._real_ids)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, block_size={self.block_size}, "
                f"time_conditioned={self.time_conditioned}")


def read_bd3lm_config(cfg: dict, source: str) -> tuple[DDiTConfig, int, bool]:
    """(backbone shape, block size, block attention) from a BD3LMConfig dict."""
    missing = [k for k in (*_SHAPE_KEYS.values(), "block_size") if k not in cfg]
    if missing:
        raise CheckpointError(f"{source}: config.json lacks {missing}")
    if not cfg.get("adaln", True):
        raise CheckpointError(f"{source}: adaln=false (no noise conditioning layers) is not "
                              "supported; the public BD3-LM checkpoints use adaln=true")
    if cfg.get("causal", False):
        raise CheckpointError(f"{source}: causal=true is an autoregressive checkpoint, not a "
                              "block diffusion model")
    block = int(cfg["block_size"])
    if block < 1:
        raise CheckpointError(f"{source}: block_size must be >= 1, got {block}")
    shape = DDiTConfig(**{f: int(cfg[k]) for f, k in _SHAPE_KEYS.items()})
    return shape, block, bool(cfg.get("cross_attn", True))


def load_bd3lm(folder: Path, cfg: dict, *, device: Any = None, dtype: Any = None,
               tokenizer: Any = "auto", time_conditioning: bool | None = None,
               eps: float | None = None) -> BD3LMDenoiser:
    """Load a BD3-LM checkpoint folder strictly (every tensor name and shape checked).

    Args:
        folder, cfg: the checkpoint folder and its config.json.
        device: where to place the weights.
        dtype: the weights' dtype (default: as stored; the rotary frequencies stay float32).
        tokenizer: "auto" (the folder's own, else GPT-2's), None, a name/path or an object.
        time_conditioning: overrides the config's flag.
        eps: the log-linear schedule's ε (default 1e-3, the authors').
    """
    source = f"BD3-LM checkpoint {folder}"
    shape, block, block_attention = read_bd3lm_config(cfg, source)
    state = read_weights(folder)
    for key in _SCALARS:  # training's clipped noise range (var_min): not part of the network
        state.pop(key, None)
    bare = [k for k in state if not k.startswith("backbone.")]
    if bare:
        raise CheckpointError(f"{source}: unexpected keys without the 'backbone.' prefix: "
                              f"{listing(bare)}")
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    inv_freq = rotary_inv_freq(shape.head_dim)
    state.setdefault("rotary_emb.inv_freq", inv_freq)  # a deterministic buffer
    with torch.device("meta"):
        backbone = DDiT(shape)
    load_into(backbone, state, source, dtype=dtype, device=device)
    backbone.rotary_emb.inv_freq = inv_freq.to(backbone.vocab_embed.embedding.device)

    raw = resolve_tokenizer(tokenizer, folder, _PUBLIC_TOKENIZER)
    rows = shape.vocab_size
    tok_mask = getattr(raw, "mask_token_id", None) if raw is not None else None
    mask = int(tok_mask) if tok_mask is not None else rows - 1
    space = space_for(raw, mask, rows, what=source)
    if time_conditioning is None:
        time_conditioning = bool(cfg.get("time_conditioning", False))
    den = BD3LMDenoiser(backbone, space, raw, block, time_conditioning,
                        eps=EPS if eps is None else eps, block_attention=block_attention)
    return on_device(den, device)


register(Family(
    name="bd3lm",
    claims=claims,
    load=lambda folder, cfg, **options: load_bd3lm(folder, cfg, **options),
    model_types=("bd3lm",),
    hub_ids=HUB_IDS,
    # the hub repos may hold no tokenizer files: GPT-2's, as the loader reads it
    tokenizer=lambda folder: resolve_tokenizer("auto", folder, _PUBLIC_TOKENIZER),
))
