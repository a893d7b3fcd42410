"""Loading DDiT denoisers (saving: ``models.saving``).

Three checkpoint layouts are understood, detected from the files in the folder:

* SEDD (``louaaron/sedd-small``, ``louaaron/sedd-medium``): ``config.json`` holding SEDD's own
  run config (``tokens``, ``graph.type == "absorb"``, ``noise.type == "loglinear"``, ``model``
  with hidden_size / cond_dim / length / n_blocks / n_heads / scale_by_sigma) and
  ``pytorch_model.bin``, a float32 state dict with no prefix (read with ``weights_only=True``).
* MDLM (``kuleshov-group/mdlm-owt``): a transformers-style ``config.json`` (vocab_size,
  model_length, hidden_dim, cond_dim, n_blocks, n_heads, time_conditioning) and
  ``model.safetensors`` whose keys carry a ``backbone.`` prefix. No remote code is run.
* Duet's own (``models.saving.save_denoiser``): ``config.json`` with ``"format": "duet-ddit"`` and
  ``model.safetensors`` without prefix; the tokenizer is saved beside them when there is one.

Every load is strict: missing, unexpected and wrongly shaped tensors are all reported by name;
only ``rotary_emb.inv_freq`` (a deterministic buffer) may be absent and is then recomputed.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from decoding.schedules import EPS

from .ddit import DDiT, DDiTConfig, rotary_inv_freq
from .denoisers import MDLMDenoiser, SEDDDenoiser

__all__ = ["CheckpointError", "build_backbone", "check_state_dict", "detect_format",
           "expected_shapes", "load_denoiser", "load_tokenizer", "resolve_folder"]

FORMAT_TAG = "duet-ddit"
FORMAT_VERSION = 1
_OPTIONAL_KEYS = ("rotary_emb.inv_freq",)
_HUB_FILES = ("config.json *.safetensors pytorch_model.bin tokenizer* vocab.json merges.txt "
              "special_tokens_map.json").split()
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# The public checkpoints use GPT-2's ids: 50257 real tokens, EOS 50256, mask 50257.
_PUBLIC_TOKENIZER = "gpt2"


class CheckpointError(ValueError):
    """A checkpoint whose tensors do not match the model it is loaded into."""


def parse_dtype(value: Any) -> torch.dtype | None:
    """None, a torch dtype, or its name (float32, bfloat16, float16) -> torch dtype or None."""
    if value is None or isinstance(value, torch.dtype):
        return value
    name = str(value).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"unsupported dtype {value!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def resolve_folder(name_or_path: str | os.PathLike) -> Path:
    """A local folder as is; otherwise a hub id fetched (or found in the cache) by snapshot."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    text = str(name_or_path)
    if path.exists() or text.startswith(("/", ".", "~")) or text.count("/") != 1:
        raise FileNotFoundError(f"{text!r} is not a checkpoint folder nor a hub id 'owner/name'")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=text, allow_patterns=_HUB_FILES))
    except Exception as err:  # the hub raises many types; one clear message is what users need
        offline = os.environ.get("HF_HUB_OFFLINE", "unset")
        raise OSError(
            f"could not fetch {text!r} from the Hugging Face hub ({type(err).__name__}: {err}). "
            f"HF_HUB_OFFLINE={offline}: offline runs need the checkpoint in the local hub cache "
            "(download it once with network access) or a local folder path."
        ) from err


def detect_format(folder: str | os.PathLike) -> str:
    """'duet', 'sedd' or 'mdlm', from the files present and the config's layout."""
    folder = Path(folder)
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if "config.json" not in present:
        raise FileNotFoundError(f"no config.json in {folder} (files: {present})")
    cfg = json.loads((folder / "config.json").read_text())
    if cfg.get("format") == FORMAT_TAG and "model.safetensors" in present:
        return "duet"
    run_cfg = cfg.get("config", cfg)  # some hub-mixin versions nest the run config
    if (
        isinstance(run_cfg.get("model"), dict)
        and "graph" in run_cfg
        and ("pytorch_model.bin" in present or "model.safetensors" in present)
    ):
        return "sedd"
    if "hidden_dim" in cfg and "model.safetensors" in present:
        return "mdlm"
    raise ValueError(
        f"cannot tell the checkpoint format of {folder}: expected a duet-ddit config with "
        "model.safetensors, a SEDD config with pytorch_model.bin, or an MDLM config with "
        f"model.safetensors; found {present}"
    )


# DDiTConfig field <- key in the public configs (SEDD nests these under "model").
_SEDD_KEYS = dict(hidden_size="hidden_size", cond_dim="cond_dim", n_blocks="n_blocks",
                  n_heads="n_heads", max_length="length")
_MDLM_KEYS = dict(vocab_size="vocab_size", hidden_size="hidden_dim", cond_dim="cond_dim",
                  n_blocks="n_blocks", n_heads="n_heads", max_length="model_length")


def _read_config(kind: str, cfg: dict) -> tuple[DDiTConfig, dict]:
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


def _listing(items: list[str], limit: int = 12) -> str:
    more = f", ... ({len(items)} in all)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def expected_shapes(config: DDiTConfig) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of a DDiT and its shape, built on the meta device (no allocation)."""
    with torch.device("meta"):
        model = DDiT(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_state_dict(state: dict, config: DDiTConfig, source: str = "checkpoint") -> None:
    """Raise CheckpointError naming every missing, unexpected or mis-shaped tensor."""
    want = expected_shapes(config)
    missing = [k for k in want if k not in state and k not in _OPTIONAL_KEYS]
    unexpected = [k for k in state if k not in want]
    wrong = [
        f"{k}: {tuple(state[k].shape)} in {source}, {want[k]} expected"
        for k in want
        if k in state and tuple(state[k].shape) != want[k]
    ]
    found = [("missing keys", missing), ("unexpected keys", unexpected),
             ("shape mismatches", wrong)]
    if missing or unexpected or wrong:
        detail = "; ".join(f"{label}: {_listing(items)}" for label, items in found if items)
        raise CheckpointError(f"{source} does not fit DDiT({config}): {detail}")


def _read_weights(folder: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").exists():
        state = load_file(str(folder / "model.safetensors"), device="cpu")
    else:
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise CheckpointError(f"{folder}/pytorch_model.bin does not hold a state dict")
    if prefix:
        bare = [k for k in state if not k.startswith(prefix)]
        if bare:
            raise CheckpointError(
                f"{folder}: unexpected keys without the {prefix!r} prefix: {_listing(bare)}"
            )
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


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


TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json", "tokenizer.model",
                   "spiece.model", "vocab.txt")


def load_tokenizer(name_or_path: str | os.PathLike, warn: bool = True) -> Any:
    """A transformers tokenizer from a folder or hub id (cache only when offline), or None."""
    try:
        from transformers import AutoTokenizer

        folder = Path(name_or_path)
        if folder.is_dir() and not any((folder / f).exists() for f in TOKENIZER_FILES):
            # Recent transformers build an empty tokenizer (one token) from a model folder
            # that holds none: that must read as "no tokenizer", not as a 1-token vocabulary.
            raise FileNotFoundError(f"no tokenizer file in {folder}")
        return AutoTokenizer.from_pretrained(str(name_or_path))
    except Exception as err:  # missing files and offline misses surface as several types
        if warn:
            warnings.warn(
                f"no tokenizer loaded from {str(name_or_path)!r} ({type(err).__name__}); "
                "continuing with tokenizer=None (token ids still work; text I/O and "
                "tokenizer checks will not)",
                stacklevel=2,
            )
        return None


def load_denoiser(name_or_path: str | os.PathLike, *, device: Any = None, dtype: Any = None,
                  time_conditioning: bool | None = None, eps: float | None = None,
                  tokenizer: Any = "auto") -> MDLMDenoiser | SEDDDenoiser:
    """Load a denoiser from a hub id or a local folder (SEDD, MDLM or duet-ddit format).

    Args:
        name_or_path: ``louaaron/sedd-small``, ``kuleshov-group/mdlm-owt``, or a folder.
        device, dtype: where and in which precision to place the weights (float32 default).
        time_conditioning: MDLM only, overrides the checkpoint's flag.
        eps: the log-linear schedule's ε (default: the checkpoint's, else 1e-3).
        tokenizer: "auto" (the folder's own, else GPT-2's for the public checkpoints, else None
            with a warning), None, a name/path, or a tokenizer object.

    Returns:
        An ``MDLMDenoiser`` or ``SEDDDenoiser`` in eval mode.
    """
    folder = resolve_folder(name_or_path)
    kind = detect_format(folder)
    config, head = _read_config(kind, json.loads((folder / "config.json").read_text()))
    state = _read_weights(folder, prefix="backbone." if kind == "mdlm" else "")
    backbone = build_backbone(config, state, f"{kind} checkpoint {folder}", device, dtype)

    if isinstance(tokenizer, str) and tokenizer == "auto":
        if (folder / "tokenizer.json").exists() or (folder / "vocab.json").exists():
            tokenizer = load_tokenizer(folder)
        else:
            tokenizer = load_tokenizer(_PUBLIC_TOKENIZER) if kind != "duet" else None
    elif isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(tokenizer)

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
