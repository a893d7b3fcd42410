"""Loading DDiT denoisers (saving: ``models.ddit.saving``).

Three checkpoint layouts are understood, detected from the files in the folder:

* SEDD (``louaaron/sedd-small``, ``louaaron/sedd-medium``): ``config.json`` holding SEDD's own
  run config (``tokens``, ``graph.type == "absorb"``, ``noise.type == "loglinear"``, ``model``
  with hidden_size / cond_dim / length / n_blocks / n_heads / scale_by_sigma) and
  ``pytorch_model.bin``, a float32 state dict with no prefix (read with ``weights_only=True``).
* MDLM (``kuleshov-group/mdlm-owt``): a transformers-style ``config.json`` (vocab_size,
  model_length, hidden_dim, cond_dim, n_blocks, n_heads, time_conditioning) and
  ``model.safetensors`` whose keys carry a ``backbone.`` prefix. No remote code is run.
* Duet's own (``models.ddit.saving.save_denoiser``): ``config.json`` with
  ``"format": "duet-ddit"`` and ``model.safetensors`` without prefix; the tokenizer is saved
  beside them when there is one.

Every load is strict: missing, unexpected and wrongly shaped tensors are all reported by name;
only ``rotary_emb.inv_freq`` (a deterministic buffer) may be absent and is then recomputed.
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from decoding.schedules import EPS

from ..hub import check_shapes, has_tokenizer, load_tokenizer, parse_dtype, read_weights
from .backbone import DDiT, DDiTConfig, rotary_inv_freq
from .heads import MDLMDenoiser, SEDDDenoiser

__all__ = ["build_backbone", "check_state_dict", "ddit_kind", "expected_shapes", "load_ddit",
           "read_ddit_config", "resolve_tokenizer"]

FORMAT_TAG = "duet-ddit"
FORMAT_VERSION = 1
_OPTIONAL_KEYS = ("rotary_emb.inv_freq",)
# The public checkpoints use GPT-2's ids: 50257 real tokens, EOS 50256, mask 50257.
_PUBLIC_TOKENIZER = "gpt2"


def ddit_kind(cfg: dict, present: set[str]) -> str | None:
    """'duet', 'sedd', 'mdlm' or None, from a config.json and the names of the folder's files."""
    if cfg.get("format") == FORMAT_TAG and "model.safetensors" in present:
        return "duet"
    run_cfg = cfg.get("config", cfg)  # some hub-mixin versions nest the run config
    if (isinstance(run_cfg.get("model"), dict) and "graph" in run_cfg
            and ("pytorch_model.bin" in present or "model.safetensors" in present)):
        return "sedd"
    mdlm_type = cfg.get("model_type", "mdlm") == "mdlm"  # BD3-LM's config has hidden_dim too
    if "hidden_dim" in cfg and "model.safetensors" in present and mdlm_type:
        return "mdlm"
    return None


# DDiTConfig field <- key in the public configs (SEDD nests these under "model").
_SEDD_KEYS = dict(hidden_size="hidden_size", cond_dim="cond_dim", n_blocks="n_blocks",
                  n_heads="n_heads", max_length="length")
_MDLM_KEYS = dict(vocab_size="vocab_size", hidden_size="hidden_dim", cond_dim="cond_dim",
                  n_blocks="n_blocks", n_heads="n_heads", max_length="model_length")


def read_ddit_config(kind: str, cfg: dict) -> tuple[DDiTConfig, dict]:
    """(backbone shape, head settings: parameterization, eps, time_conditioning, ...)."""
    if kind == "sedd":
        cfg = cfg.get("config", cfg)
        graph, noise, model = cfg["graph"], cfg.get("noise", {}), cfg["model"]
        if graph.get("type") != "absorb":
            raise ValueError(f"only SEDD's absorbing graph is supported, not {graph.get('type')!r}")
        if noise.get("type", "loglinear") != "loglinear":
            raise ValueError(f"only SEDD's log-linear noise is supported, not {noise['type']!r}")
        shape = {f: int(model[k]) for f, k in _SEDD_KEYS.items()}
        # SEDD counts real tokens; the absorbing state adds the mask row.
        shape["vocab_size"] = int(cfg["tokens"]) + 1
        head = {"parameterization": "sedd", "scale_by_sigma": model.get("scale_by_sigma", True)}
        return DDiTConfig(**shape), head
    if kind == "mdlm":
        shape = {f: int(cfg[k]) for f, k in _MDLM_KEYS.items()}
        head = {"parameterization": "mdlm", "time_conditioning": cfg.get("time_conditioning")}
        return DDiTConfig(**shape), head
    if int(cfg.get("format_version", 1)) > FORMAT_VERSION:
        raise ValueError(f"format_version {cfg['format_version']} is newer than this code")
    unknown = set(cfg["ddit"]) - {f.name for f in fields(DDiTConfig)}
    if unknown:
        raise ValueError(f"unknown DDiTConfig fields in checkpoint: {sorted(unknown)}")
    head = {k: cfg.get(k) for k in ("parameterization", "eps", "time_conditioning",
                                     "scale_by_sigma")}
    return DDiTConfig(**cfg["ddit"]), head


def expected_shapes(config: DDiTConfig) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of a DDiT and its shape, built on the meta device (no allocation)."""
    with torch.device("meta"):
        model = DDiT(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_state_dict(state: dict, config: DDiTConfig, source: str = "checkpoint") -> None:
    """Raise CheckpointError naming every missing, unexpected or mis-shaped tensor."""
    check_shapes(state, expected_shapes(config), source, f"DDiT({config})", _OPTIONAL_KEYS)


def build_backbone(config: DDiTConfig, state: dict, source: str = "checkpoint",
                   device: Any = None, dtype: Any = None) -> DDiT:
    """A DDiT holding ``state`` (checked strictly), on ``device`` in ``dtype`` (default fp32)."""
    check_state_dict(state, config, source)
    state = {k: v.float() for k, v in state.items()}
    # Always recomputed: it is a deterministic function of the head size, and keeping it in
    # float32 matters for long positions.
    state["rotary_emb.inv_freq"] = rotary_inv_freq(config.head_dim)
    with torch.device("meta"):
        model = DDiT(config)
    model.load_state_dict(state, strict=True, assign=True)
    dtype = parse_dtype(dtype)
    model = model.to(device=device, dtype=dtype)
    model.rotary_emb.inv_freq = model.rotary_emb.inv_freq.float()
    return model.eval()


def resolve_tokenizer(tokenizer: Any, folder: Path, default: str | None) -> Any:
    """"auto" (the folder's own, else ``default`` by name, else None), a name/path, or as is."""
    if isinstance(tokenizer, str) and tokenizer == "auto":
        if has_tokenizer(folder):
            return load_tokenizer(folder)
        return load_tokenizer(default) if default else None
    if isinstance(tokenizer, (str, os.PathLike)):
        return load_tokenizer(tokenizer)
    return tokenizer


def load_ddit(folder: Path, cfg: dict, kind: str, *, device: Any = None, dtype: Any = None,
              time_conditioning: bool | None = None, eps: float | None = None,
              tokenizer: Any = "auto") -> MDLMDenoiser | SEDDDenoiser:
    """Load a DDiT denoiser (SEDD, MDLM or duet-ddit format) from its folder.

    Args:
        folder, cfg, kind: the checkpoint folder, its config.json and ``ddit_kind``'s answer.
        device, dtype: where and in which precision to place the weights (float32 default).
        time_conditioning: MDLM only, overrides the checkpoint's flag.
        eps: the log-linear schedule's ε (default: the checkpoint's, else 1e-3).
        tokenizer: "auto" (the folder's own, else GPT-2's for the public checkpoints, else None
            with a warning), None, a name/path, or a tokenizer object.

    Returns:
        An ``MDLMDenoiser`` or ``SEDDDenoiser`` in eval mode.
    """
    config, head = read_ddit_config(kind, cfg)
    state = read_weights(folder, prefix="backbone." if kind == "mdlm" else "")
    backbone = build_backbone(config, state, f"{kind} checkpoint {folder}", device, dtype)
    tokenizer = resolve_tokenizer(tokenizer, folder, _PUBLIC_TOKENIZER if kind != "duet" else None)

    eps = float(eps if eps is not None else head.get("eps") or EPS)
    if head["parameterization"] == "sedd":
        if time_conditioning is False:
            raise ValueError("SEDD is always conditioned on the noise level")
        scale = bool(head.get("scale_by_sigma", True))
        return SEDDDenoiser(backbone, eps=eps, tokenizer=tokenizer, scale_by_sigma=scale)
    if head["parameterization"] != "mdlm":
        raise ValueError(f"unknown parameterization {head['parameterization']!r}")
    if time_conditioning is None:
        time_conditioning = bool(head.get("time_conditioning"))
    return MDLMDenoiser(backbone, time_conditioning=time_conditioning, eps=eps, tokenizer=tokenizer)
