"""LLaDA (Nie et al. 2025; ``GSAI-ML/LLaDA-8B-Base``, ``GSAI-ML/LLaDA-8B-Instruct``,
``GSAI-ML/LLaDA-1.5``), loaded natively (``models.families.llada_network``): no remote code.

The hub checkpoint: ``config.json`` with ``model_type: "llada"`` (architectures
``LLaDAModelLM``) and the OLMo-style keys of the authors' ``ModelConfig``: d_model, n_heads,
n_kv_heads, n_layers, mlp_hidden_size (or mlp_ratio), activation_type, block_type,
layer_norm_type, layer_norm_with_affine, bias_for_layer_norm, rms_norm_eps, rope, rope_theta,
rope_full_precision, include_bias, include_qkv_bias, attention_layer_norm, input_emb_norm,
scale_logits, weight_tying, vocab_size, embedding_size (126464 rows), max_sequence_length,
``mask_token_id`` (126336, ``<|mdm_mask|>``). A key the file omits takes the authors' default
(their ``LLaDAConfig`` merges ``ModelConfig()``'s). Weights under ``model.transformer.*``
(see the network module), bf16 shards with ``model.safetensors.index.json``. The tokenizer is
a plain fast tokenizer (``tokenizer.json``).

Conventions: bidirectional attention, **no** logit shift (row i is the network's output at i),
no time input (``t`` is accepted and ignored). LLaDA's chat tokens (``<|start_header_id|>``,
``<|end_header_id|>``, ``<|eot_id|>``) sit *above* the mask id, so the token space is not the
identity: engine ids skip the mask (a model id m > 126336 is engine id m-1) and the mask is the
engine's V. ``causal=True`` (prefix-only attention with the same weights) gives row i the
context x_<=i, whose own input is the mask wherever the row is used.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..registry import Family, register
from .cached_trunks import llada_cached_features
from .llada_network import LLaDANetwork, LLaDAShape
from .token_space_denoiser import SpaceDenoiser, family_tokenizer, stream_into, token_space

__all__ = ["LLaDADenoiser", "claims", "llada_shape", "load_llada"]

_KINDS = {"activation_type": ("swiglu", "silu", "gelu", "relu"),
          "block_type": ("sequential", "llama"),
          "layer_norm_type": ("default", "low_precision", "rms", "gemma_rms")}
_DEFAULT_MAX_LENGTH = 1024  # ModelConfig.max_sequence_length's default


def claims(cfg: dict, files: set[str]) -> bool:
    return cfg.get("model_type") == "llada" or "LLaDAModelLM" in (cfg.get("architectures") or ())


def _n_kv_heads(cfg: dict) -> int:
    """ModelConfig.effective_n_kv_heads."""
    n_heads, n_kv = int(cfg["n_heads"]), cfg.get("n_kv_heads")
    mqa = cfg.get("multi_query_attention")
    if n_kv is None:
        return 1 if mqa is True else n_heads
    if mqa is not None and int(n_kv) != (1 if mqa else n_heads):
        raise ValueError("LLaDA config.json sets both multi_query_attention and n_kv_heads, "
                         "inconsistently")
    return int(n_kv)


def llada_shape(cfg: dict) -> LLaDAShape:
    """The network's shape from a LLaDA config.json; ValueError naming what cannot be built."""
    missing = [k for k in ("d_model", "n_heads", "n_layers") if k not in cfg]
    if missing:
        raise ValueError(f"LLaDA config.json lacks {missing}")
    if cfg.get("alibi") or not cfg.get("rope", False):
        raise ValueError("LLaDA checkpoints use RoPE (rope: true, alibi: false); this config "
                         f"has rope={cfg.get('rope')!r}, alibi={cfg.get('alibi')!r}")
    if int(cfg.get("block_group_size", 1)) != 1:
        raise ValueError(f"block_group_size {cfg['block_group_size']} is not supported (its "
                         "weights are named by block group); only 1")
    for key, allowed in _KINDS.items():
        if key in cfg and cfg[key] not in allowed:
            raise ValueError(f"LLaDA config.json: {key} {cfg[key]!r} is not one of {allowed}")
    known = {f.name for f in fields(LLaDAShape)}
    kw = {k: cfg[k] for k in known if cfg.get(k) is not None}
    d_model = int(cfg["d_model"])
    kw["mlp_hidden_size"] = int(cfg.get("mlp_hidden_size") or cfg.get("mlp_ratio", 4) * d_model)
    kw["n_kv_heads"] = _n_kv_heads(cfg)
    kw["embedding_size"] = int(cfg.get("embedding_size") or cfg.get("vocab_size", 50257))
    bias_ln = cfg.get("bias_for_layer_norm")
    kw["bias_for_layer_norm"] = bool(cfg.get("include_bias", False) if bias_ln is None else bias_ln)
    shape = LLaDAShape(**kw)
    if d_model % shape.n_heads or shape.n_heads % shape.n_kv_heads:
        raise ValueError(f"d_model {d_model}, n_heads {shape.n_heads} and n_kv_heads "
                         f"{shape.n_kv_heads} do not divide")
    if shape.block_type == "llama" and shape.activation_type == "swiglu":
        raise ValueError("a llama block multiplies by up_proj itself: activation_type swiglu "
                         "would halve ff_proj's output (the authors' code cannot run it either)")
    if shape.embedding_size < int(cfg.get("vocab_size", 0)):
        raise ValueError("embedding_size is smaller than vocab_size")
    return shape


class LLaDADenoiser(SpaceDenoiser):
    """A LLaDA checkpoint as a ``decoding.protocols.Denoiser`` (see the module docstring).

    Attributes:
        network: ``LLaDANetwork`` (``network.model.transformer.*`` as on the hub).
        token_space: LLaDA's real ids: every tokenizer id but the mask; padding rows dropped.
    """

    shift = False
    supports_cache = ("prefix", "dual")

    def __init__(self, network: LLaDANetwork, space: Any, tokenizer: Any,
                 max_length: int | None):
        super().__init__(space, tokenizer, max_length)
        self.network = network

    def features(self, ids: Tensor, causal: bool) -> Tensor:
        return self.network.features(ids, causal)

    def cached_features(self, ids: Tensor, pos: Tensor, call: Any, causal: bool) -> Tensor:
        return llada_cached_features(self.network, ids, pos, call, causal)

    def head(self) -> tuple[Tensor, Tensor | None]:
        return self.network.head()


def load_llada(folder: Path, cfg: dict, *, device: Any = None, dtype: Any = None,
               tokenizer: Any = "auto", max_length: int | None = None) -> LLaDADenoiser:
    """Load a LLaDA checkpoint (hub id or folder, see the module docstring).

    Args:
        folder, cfg: the checkpoint folder and its config.json.
        device: where the weights go (read from the shards straight onto it).
        dtype: None keeps the stored dtype (bf16 for the hub checkpoints), else cast.
        tokenizer: "auto" (the folder's), a folder or hub id, or a tokenizer object; needed
            to tell real ids from padding rows.
        max_length: at most this many positions (default: max_sequence_length).

    Returns:
        A ``LLaDADenoiser`` in eval mode, gradients off.
    """
    shape = llada_shape(cfg)
    source = f"LLaDA checkpoint {folder}"
    with torch.device("meta"):
        network = LLaDANetwork(shape)
    stream_into(network, folder, source, dtype=dtype, device=device)
    raw = family_tokenizer(tokenizer, folder)
    space = token_space(raw, cfg, shape.embedding_size, source)
    limit = max_length if max_length is not None else cfg.get("max_sequence_length",
                                                              _DEFAULT_MAX_LENGTH)
    den = LLaDADenoiser(network, space, raw, limit)
    return den.to(network.model.transformer.wte.weight.device).eval()


register(Family(
    name="llada",
    claims=claims,
    load=load_llada,
    model_types=("llada",),
    hub_ids=("GSAI-ML/LLaDA-8B-Base", "GSAI-ML/LLaDA-8B-Instruct", "GSAI-ML/LLaDA-1.5"),
    tokenizer=lambda folder: family_tokenizer("auto", folder),
))
