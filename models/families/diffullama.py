"""DiffuLLaMA (Gong et al. 2025, "Scaling Diffusion Language Models via Adaptation from
Autoregressive Models"): LLaMA-2-7B continued-pretrained as a masked diffusion model.

Hub: ``diffusionfamily/diffullama``; the authors' code is ``HKUNLP/DiffuLLaMA``
(``inf_diffullama.py`` loads it as a plain ``LlamaForCausalLM`` and makes it bidirectional with
an attention-mask patch written for transformers 4.44-4.49; that patch is not used here).

Checkpoint layout: a ``LlamaForCausalLM`` checkpoint exactly (``config.json`` with
``model_type: "llama"``; shards named by ``model.safetensors.index.json`` holding
``model.embed_tokens.weight``, ``model.layers.N.{input_layernorm, post_attention_layernorm}
.weight``, ``model.layers.N.self_attn.{q,k,v,o}_proj.weight``,
``model.layers.N.mlp.{gate,up,down}_proj.weight``, ``model.norm.weight``, ``lm_head.weight``;
without ``lm_head.weight`` when ``tie_word_embeddings`` is set). The network is transformers'
own ``LlamaModel``, built on the meta device and filled strictly.

Conventions: bidirectional attention (an explicit all-zero 4D mask, which transformers' LLaMA
hands unchanged to its sdpa and eager kernels instead of its causal one); **shifted** logits as
Dream's (the authors' ``shift: true``, "do not change this"): row i of ``log_probs`` is the
output at i-1; no time input. The mask is the tokenizer's ``mask_token_id`` (LLaMA-2's
ordinary token 811 in the authors' training code; ``mask_id=`` when the tokenizer has none).
It is left out of the real ids, so its marginal mass is exactly zero.

Detection: the config says ``model_type: "llama"`` like every LLaMA, and the weights carry no
marker either, so this family never claims a folder by itself. It is chosen by name
(``load_denoiser(path, family="diffullama")``, as ``conf/denoiser/diffullama_7b.yaml`` does),
or by its hub id ``diffusionfamily/diffullama``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..ddit.formats import resolve_tokenizer
from ..hub import CheckpointError
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
from .token_space_denoiser import SpaceDenoiser, stream_into

__all__ = ["DiffuLLaMADenoiser", "load_diffullama"]

HUB_IDS = ("diffusionfamily/diffullama",)


class LlamaNet(nn.Module):
    """``model`` (transformers' LlamaModel) and ``lm_head``, under the checkpoint's names;
    without ``lm_head`` when it is tied to the input embedding."""

    def __init__(self, config: Any, tied: bool):
        super().__init__()
        from transformers import LlamaModel

        self.model = LlamaModel(config)
        self.tied = tied
        if not tied:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    @property
    def head_weight(self) -> Tensor:
        return self.model.embed_tokens.weight if self.tied else self.lm_head.weight


class DiffuLLaMADenoiser(SpaceDenoiser):
    """DiffuLLaMA as a ``decoding.protocols.Denoiser`` (bidirectional, shifted, no time input).

    ``causal=True``: lower-triangular attention with the same weights; with the shift, row i
    comes from position i-1 and sees exactly ``x[:, :i]`` (LLaMA's own causal attention).
    """

    shift = True

    def __init__(self, net: LlamaNet, space, tokenizer: Any, max_length: int):
        super().__init__(space, tokenizer, max_length)
        self.net = net

    def features(self, ids: Tensor, causal: bool) -> Tensor:
        mask = additive_mask(ids.shape[1], causal, self.net.head_weight.dtype, ids.device)
        return self.net.model(input_ids=ids, attention_mask=mask,
                              use_cache=False).last_hidden_state

    def head(self) -> tuple[Tensor, None]:
        return self.net.head_weight, None


def load_diffullama(folder: Path, cfg: dict, *, device: Any = None, dtype: Any = None,
                    tokenizer: Any = "auto", mask_id: int | None = None,
                    attn_implementation: str = "sdpa",
                    max_length: int | None = None) -> DiffuLLaMADenoiser:
    """Load a DiffuLLaMA checkpoint folder strictly (every tensor name and shape checked).

    Args:
        folder, cfg: the checkpoint folder and its config.json (a LLaMA config).
        device: where to place the weights.
        dtype: the weights' dtype (default: as stored; bf16 is read straight into bf16).
        tokenizer: "auto" (the folder's own), None, a name/path or a tokenizer object.
        mask_id: the model's mask id, when the tokenizer has no mask token (or none is given).
        attn_implementation: transformers' attention kernel, "sdpa" or "eager".
        max_length: the longest sequence accepted (default: the config's positions).
    """
    from transformers import LlamaConfig

    source = f"DiffuLLaMA checkpoint {folder}"
    if cfg.get("model_type") != "llama":
        raise CheckpointError(f"{source}: DiffuLLaMA is a LLaMA checkpoint (model_type "
                              f"'llama'), this config says {cfg.get('model_type')!r}")
    if attn_implementation not in ("sdpa", "eager"):
        raise ValueError(f"attn_implementation must be 'sdpa' or 'eager' (kernels that take an "
                         f"explicit mask), got {attn_implementation!r}")
    shapes = stored_shapes(folder)  # names and shapes from the headers; a missing shard named
    config = LlamaConfig.from_dict(dict(cfg))
    config._attn_implementation = attn_implementation
    rows = int(config.vocab_size)
    raw = resolve_tokenizer(tokenizer, folder, None)
    mask = tokenizer_mask_id(raw, mask_id, source)
    space = space_for(raw, mask, rows, what=source)

    limit = position_limit(max_length, int(config.max_position_embeddings), source)
    tied = bool(getattr(config, "tie_word_embeddings", False)) and "lm_head.weight" not in shapes
    with params_on_meta():
        net = LlamaNet(config, tied)
    stream_into(net, folder, source, dtype=dtype, device=device)  # shard by shard
    return on_device(DiffuLLaMADenoiser(net, space, raw, limit),
                     device)


register(Family(
    name="diffullama",
    claims=lambda cfg, files: False,  # a plain LLaMA config: chosen by name or hub id only
    load=lambda folder, cfg, **options: load_diffullama(folder, cfg, **options),
    model_types=(),
    hub_ids=HUB_IDS,
))
