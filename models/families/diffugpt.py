"""DiffuGPT (Gong et al. 2025, "Scaling Diffusion Language Models via Adaptation from
Autoregressive Models"): GPT-2 continued-pretrained as a masked diffusion model.

Hub: ``diffusionfamily/diffugpt-s`` (GPT-2 small), ``diffusionfamily/diffugpt-m`` (medium); the
authors' code is ``HKUNLP/DiffuLLaMA`` (``model.py``: ``DiscreteDiffusionModel``, a
``PyTorchModelHubMixin`` around a GPT-2 whose causal buffer is filled with True).

Checkpoint layout (read by this module, no remote code):

* ``config.json``: GPT-2's own config (``model_type: "gpt2"``, ``n_embd``, ``n_layer``,
  ``n_head``, ``n_positions``, ...); a copy nested under ``"config"`` is read too.
* weights (``model.safetensors``, sharded with an index, or ``pytorch_model.bin``) with the
  wrapper's names: ``embed_tokens.weight`` (GPT-2's ``wte``, hoisted out), ``denoise_model.*``
  (GPT-2's ``transformer`` without ``wte``: ``wpe``, ``h.N.{ln_1, attn.c_attn, attn.c_proj,
  ln_2, mlp.c_fc, mlp.c_proj}``, ``ln_f``) and ``lm_head.weight``. GPT-2 ties ``lm_head`` to
  ``wte``; a checkpoint saved without ``lm_head.weight`` (tied weights stored once) uses
  ``embed_tokens.weight`` for both. The embedding rows are the tokenizer's length, resized to
  an even number by the authors when they added a mask token: the row count is read from the
  tensor. GPT-2's causal-mask buffers of old transformers (``h.N.attn.bias``,
  ``h.N.attn.masked_bias``) hold no learned value and are skipped if present.

Conventions: attention is bidirectional (here: an explicit all-zero 4D mask, which transformers'
GPT-2 passes unchanged to its sdpa and eager kernels instead of building the causal one); the
logits are *shifted* (the authors' ``shift: true``: the output at i-1 predicts token i), so row
i of ``log_probs`` is the output at i-1; no time input. The mask is the tokenizer's
``mask_token_id``: diffugpt-s reuses GPT-2's ordinary token 10541, diffugpt-m adds 50257. The
mask id is never a real token here (a reused id would read as a mask), so the ``TokenSpace``
leaves it out and the marginals give it exactly zero mass.

Detection: ``model_type == "gpt2"`` with weight files claims the folder; the loader then reads
the weight names from the file headers and requires the wrapper's layout (``embed_tokens.weight``
and ``denoise_model.h.*``). A plain GPT-2 (``transformer.*`` names) is refused before any weight
is read: it is an AR model (``models.load_ar``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..ddit.formats import resolve_tokenizer
from ..hub import CheckpointError, load_into, read_weights
from ..registry import Family, register
from ._common import (
    additive_mask,
    on_device,
    params_on_meta,
    position_limit,
    space_for,
    stored_shapes,
    tokenizer_mask_id,
)
from .token_space_denoiser import SpaceDenoiser

__all__ = ["DiffuGPTDenoiser", "load_diffugpt"]

HUB_IDS = ("diffusionfamily/diffugpt-s", "diffusionfamily/diffugpt-m")
_LEGACY_BUFFER = re.compile(r"denoise_model\.h\.\d+\.attn\.(bias|masked_bias)$")


def gpt2_config(cfg: dict) -> dict:
    """The GPT-2 config dict (the hub mixin may nest it under ``config``)."""
    inner = cfg.get("config")
    return inner if isinstance(inner, dict) and inner.get("model_type") == "gpt2" else cfg


def claims(cfg: dict, files: set[str]) -> bool:
    weights = {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"}
    return gpt2_config(cfg).get("model_type") == "gpt2" and bool(weights & files)


class DiffuGPTNet(nn.Module):
    """The wrapper's modules under their checkpoint names (``embed_tokens``, ``denoise_model``,
    ``lm_head``); ``lm_head`` is absent when tied to ``embed_tokens``."""

    def __init__(self, config: Any, rows: int, tied: bool):
        super().__init__()
        from transformers import GPT2Model

        config.vocab_size = rows
        self.embed_tokens = nn.Embedding(rows, config.n_embd)
        self.denoise_model = GPT2Model(config)
        del self.denoise_model.wte  # the wrapper hoists it to embed_tokens
        self.tied = tied
        if not tied:
            self.lm_head = nn.Linear(config.n_embd, rows, bias=False)

    @property
    def head_weight(self) -> Tensor:
        return self.embed_tokens.weight if self.tied else self.lm_head.weight


class DiffuGPTDenoiser(SpaceDenoiser):
    """DiffuGPT as a ``decoding.protocols.Denoiser`` (bidirectional, shifted, no time input).

    ``causal=True`` uses a lower-triangular mask with the same weights: with the shift, row i
    is the output at i-1, which then sees exactly ``x[:, :i]`` (GPT-2's own causal attention).
    """

    shift = True

    def __init__(self, net: DiffuGPTNet, space, tokenizer: Any, max_length: int):
        super().__init__(space, tokenizer, max_length)
        self.net = net

    def features(self, ids: Tensor, causal: bool) -> Tensor:
        emb = self.net.embed_tokens(ids)
        mask = additive_mask(ids.shape[1], causal, emb.dtype, ids.device)
        return self.net.denoise_model(inputs_embeds=emb, attention_mask=mask,
                                      use_cache=False).last_hidden_state

    def head(self) -> tuple[Tensor, None]:
        return self.net.head_weight, None


def load_diffugpt(folder: Path, cfg: dict, *, device: Any = None, dtype: Any = None,
                  tokenizer: Any = "auto", mask_id: int | None = None,
                  attn_implementation: str = "sdpa",
                  max_length: int | None = None) -> DiffuGPTDenoiser:
    """Load a DiffuGPT checkpoint folder strictly (every tensor name and shape checked).

    Args:
        folder, cfg: the checkpoint folder and its config.json.
        device: where to place the weights.
        dtype: the weights' dtype (default: as stored; bf16 is read straight into bf16).
        tokenizer: "auto" (the folder's own), None, a name/path or a tokenizer object.
        mask_id: the model's mask id, when the tokenizer has no mask token (or none is given).
        attn_implementation: transformers' attention kernel, "sdpa" or "eager".
        max_length: the longest sequence accepted (default: the config's positions).
    """
    from transformers import GPT2Config

    if attn_implementation not in ("sdpa", "eager"):
        raise ValueError(f"attn_implementation must be 'sdpa' or 'eager' (kernels that take an "
                         f"explicit mask), got {attn_implementation!r}")
    source = f"DiffuGPT checkpoint {folder}"
    shapes = stored_shapes(folder)  # names and shapes from the headers; a missing shard named
    if "embed_tokens.weight" not in shapes or not any(k.startswith("denoise_model.h.")
                                                      for k in shapes):
        names = sorted(shapes)[:4]
        raise CheckpointError(
            f"{folder} holds a GPT-2 checkpoint without DiffuGPT's layout (embed_tokens.weight "
            f"and denoise_model.h.*; found {names} ...): a plain GPT-2 is an AR model, load it "
            "with models.load_ar")
    rows = shapes["embed_tokens.weight"][0]
    raw = resolve_tokenizer(tokenizer, folder, None)
    mask = tokenizer_mask_id(raw, mask_id, source)
    space = space_for(raw, mask, rows, what=source)

    config = GPT2Config.from_dict(dict(gpt2_config(cfg)))
    config._attn_implementation = attn_implementation
    limit = position_limit(max_length, int(config.n_positions), source)
    tied = "lm_head.weight" not in shapes
    with params_on_meta():
        net = DiffuGPTNet(config, rows, tied)
    state = {k: v for k, v in read_weights(folder).items() if not _LEGACY_BUFFER.match(k)}
    load_into(net, state, source, dtype=dtype, device=device)
    return on_device(DiffuGPTDenoiser(net, space, raw, limit), device)


register(Family(
    name="diffugpt",
    claims=claims,
    load=lambda folder, cfg, **options: load_diffugpt(folder, cfg, **options),
    model_types=("gpt2",),
    hub_ids=HUB_IDS,
))
