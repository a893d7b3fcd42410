"""Dream-v0 (Ye et al. 2025; ``Dream-org/Dream-v0-Base-7B``, ``Dream-org/Dream-v0-Instruct-7B``),
loaded natively on transformers' Qwen2 modules: no remote code.

The hub checkpoint: ``config.json`` with ``model_type: "Dream"`` (architectures ``DreamModel``)
and Qwen2's shape keys (hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
num_key_value_heads, hidden_act, rms_norm_eps, rope_theta, rope_scaling, max_position_embeddings,
``vocab_size`` = the 152064 embedding rows), ``mask_token_id`` (151666, ``<|mask|>``),
``pad_token_id`` and ``tie_word_embeddings`` (false); bf16 shards named by
``model.safetensors.index.json`` holding ``model.embed_tokens.weight``,
``model.layers.N.{input_layernorm, post_attention_layernorm}.weight``,
``model.layers.N.self_attn.{q,k,v}_proj.{weight,bias}``, ``...o_proj.weight``,
``model.layers.N.mlp.{gate,up,down}_proj.weight``, ``model.norm.weight`` and ``lm_head.weight``
(exactly the key names of a Qwen2 causal LM). The tokenizer is the remote ``DreamTokenizer``,
which is Qwen2's byte-level BPE under another name: it is read as a Qwen2 tokenizer
(``vocab.json`` + ``merges.txt``), or from ``tokenizer.json`` where there is one; Dream adds
``<|beginoftext|>`` (151665) and ``<|mask|>`` (151666) after Qwen2's specials, so the tokenizer
defines 151667 ids and rows 151667..152063 are padding.

Conventions, as the authors' ``modeling_dream.py`` / ``generation_utils.py`` have them:

* attention is bidirectional (``is_causal = False``). transformers' Qwen2 attends causally
  unless it is handed a prepared 4D mask, which it then uses as is (sdpa and eager; the sdpa
  path goes causal only when the mask is None; flash-attention-2 ignores such a mask and is
  refused here). So every forward builds its own additive mask: all zeros, or -inf above the
  diagonal for ``causal=True``.
* logits are **shifted**: the authors compute ``cat([logits[:, :1], logits[:, :-1]], 1)``, so
  the network's output at position i-1 is the prediction for token i. ``log_probs`` returns
  the prediction *for* each position: row i comes from hidden state i-1, and row 0 from
  position 0 itself (the authors' convention for the first row). Under ``causal=True`` row i
  thus sees x_<i exactly: the prefix-only context DCD wants.
* there is no time input: ``t`` is accepted and ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..registry import Family, register
from .cached_trunks import dream_cached_features
from .token_space_denoiser import SpaceDenoiser, family_tokenizer, stream_into, token_space

__all__ = ["DreamDenoiser", "claims", "load_dream", "qwen2_config"]

# config.json keys handed to transformers' Qwen2Config unchanged (DreamConfig's names).
_SHAPE_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
               "num_attention_heads", "num_key_value_heads", "hidden_act",
               "max_position_embeddings", "rms_norm_eps", "rope_theta", "attention_dropout")
_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
             "num_attention_heads")
_ATTENTION = ("sdpa", "eager")


def claims(cfg: dict, files: set[str]) -> bool:
    return cfg.get("model_type") == "Dream" or "DreamModel" in (cfg.get("architectures") or ())


def qwen2_config(cfg: dict, attn_implementation: str = "sdpa") -> Any:
    """transformers' Qwen2Config for a Dream config.json (head_dim = hidden / heads, as Dream).

    The authors' attention ignores sliding windows (it always attends to every position), so
    the Qwen2 config is built without one.
    """
    from transformers import Qwen2Config

    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise ValueError(f"Dream config.json lacks {missing}")
    if attn_implementation not in _ATTENTION:
        raise ValueError(f"attn_implementation must be one of {_ATTENTION} (flash-attention-2 "
                         f"ignores the bidirectional mask), got {attn_implementation!r}")
    kw = {k: cfg[k] for k in _SHAPE_KEYS if cfg.get(k) is not None}
    kw.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    if cfg.get("rope_scaling"):
        kw["rope_scaling"] = dict(cfg["rope_scaling"])
    pad = cfg.get("pad_token_id")
    config = Qwen2Config(**kw, head_dim=int(cfg["hidden_size"]) // int(cfg["num_attention_heads"]),
                         tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                         use_sliding_window=False, use_cache=False,
                         pad_token_id=pad if pad is not None and pad < cfg["vocab_size"] else None)
    config._attn_implementation = attn_implementation
    return config


class _DreamNetwork(nn.Module):
    """Qwen2Model as ``model`` plus ``lm_head`` (absent when the embeddings are tied)."""

    def __init__(self, config: Any):
        super().__init__()
        from transformers import Qwen2Model

        self.config = config
        self.model = Qwen2Model(config)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def rebuild_buffers(self, device: Any) -> None:
        """The rotary frequencies (a non-persistent buffer, never in the checkpoint)."""
        from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

        self.model.rotary_emb = Qwen2RotaryEmbedding(self.config).to(device)


class DreamDenoiser(SpaceDenoiser):
    """A Dream checkpoint as a ``decoding.protocols.Denoiser`` (see the module docstring).

    Attributes:
        network: the Qwen2 trunk (``network.model``) and ``network.lm_head``.
        token_space: Dream's real ids (0..151665 for the hub tokenizer: an identity space
            with the mask 151666 at V).
    """

    shift = True
    supports_cache = ("prefix", "dual")

    def __init__(self, network: _DreamNetwork, space: Any, tokenizer: Any,
                 max_length: int | None):
        super().__init__(space, tokenizer, max_length)
        self.network = network

    def features(self, ids: Tensor, causal: bool) -> Tensor:
        length = ids.shape[1]
        dtype = self.network.model.embed_tokens.weight.dtype
        mask = torch.zeros(1, 1, length, length, dtype=dtype, device=ids.device)
        if causal:
            above = torch.ones(length, length, dtype=torch.bool, device=ids.device).triu(1)
            mask = mask.masked_fill(above, torch.finfo(dtype).min)
        out = self.network.model(input_ids=ids, attention_mask=mask, use_cache=False)
        return out.last_hidden_state

    def cached_features(self, ids: Tensor, pos: Tensor, call: Any, causal: bool) -> Tensor:
        return dream_cached_features(self.network.model, ids, pos, call, causal)

    def head(self) -> tuple[Tensor, Tensor | None]:
        net = self.network
        if net.config.tie_word_embeddings:
            return net.model.embed_tokens.weight, None
        return net.lm_head.weight, None


def load_dream(folder: Path, cfg: dict, *, device: Any = None, dtype: Any = None,
               tokenizer: Any = "auto", attn_implementation: str = "sdpa",
               max_length: int | None = None) -> DreamDenoiser:
    """Load a Dream checkpoint (hub id or folder, see the module docstring).

    Args:
        folder, cfg: the checkpoint folder and its config.json.
        device: where the weights go (read from the shards straight onto it).
        dtype: None keeps the stored dtype (bf16 for the hub checkpoints), else cast.
        tokenizer: "auto" (the folder's), a folder or hub id, or a tokenizer object; needed
            to tell real ids from padding rows.
        attn_implementation: "sdpa" (default) or "eager".
        max_length: at most this many positions (default: max_position_embeddings).

    Returns:
        A ``DreamDenoiser`` in eval mode, gradients off.
    """
    from transformers import Qwen2Tokenizer

    config = qwen2_config(cfg, attn_implementation)
    source = f"Dream checkpoint {folder}"
    with torch.device("meta"):
        network = _DreamNetwork(config)
    stream_into(network, folder, source, dtype=dtype, device=device)
    network.rebuild_buffers(network.model.embed_tokens.weight.device)
    raw = family_tokenizer(tokenizer, folder, bpe_class=Qwen2Tokenizer)
    space = token_space(raw, cfg, int(cfg["vocab_size"]), source)
    limit = max_length if max_length is not None else cfg.get("max_position_embeddings")
    den = DreamDenoiser(network, space, raw, limit)
    return den.to(network.model.embed_tokens.weight.device).eval()


def dream_tokenizer(folder: Path) -> Any:
    """Dream's tokenizer files, read natively (its remote DreamTokenizer is Qwen2's BPE)."""
    from transformers import Qwen2Tokenizer

    return family_tokenizer("auto", folder, bpe_class=Qwen2Tokenizer)


register(Family(
    name="dream",
    claims=claims,
    load=load_dream,
    model_types=("Dream",),
    hub_ids=("Dream-org/Dream-v0-Base-7B", "Dream-org/Dream-v0-Instruct-7B"),
    tokenizer=lambda folder: dream_tokenizer(folder),
))
