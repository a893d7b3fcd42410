"""What every checkpoint family shares: folders and hub ids, dtypes, tokenizers, strict weights.

A family module (``models/families``) reads its own ``config.json`` keys and names its own
tensors; everything here is format-agnostic: finding the folder, reading single-file or sharded
weights in their stored dtype (bf16 stays bf16: no float32 copy of a 7B model), and comparing a
state dict with the shapes a module built on the meta device expects, naming what differs.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["CheckpointError", "check_shapes", "listing", "load_into", "load_tokenizer",
           "parse_dtype", "read_config", "read_weights", "resolve_folder"]

HUB_FILES = ("*.json *.safetensors pytorch_model.bin tokenizer* vocab.* merges.txt "
             "*.model *.jinja special_tokens_map.json").split()
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json", "tokenizer.model",
                   "spiece.model", "vocab.txt")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
INDEX_FILE = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint whose files or tensors do not match the model it is loaded into."""


def parse_dtype(value: Any) -> torch.dtype | None:
    """None, a torch dtype, or its name (float32, bfloat16, float16) -> torch dtype or None."""
    if value is None or isinstance(value, torch.dtype):
        return value
    name = str(value).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"unsupported dtype {value!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def listing(items: list[str], limit: int = 12) -> str:
    more = f", ... ({len(items)} in all)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


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
        return Path(snapshot_download(repo_id=text, allow_patterns=HUB_FILES))
    except Exception as err:  # the hub raises many types; one clear message is what users need
        offline = os.environ.get("HF_HUB_OFFLINE", "unset")
        raise OSError(
            f"could not fetch {text!r} from the Hugging Face hub ({type(err).__name__}: {err}). "
            f"HF_HUB_OFFLINE={offline}: offline runs need the checkpoint in the local hub cache "
            "(download it once with network access) or a local folder path."
        ) from err


def read_config(folder: Path) -> dict:
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if "config.json" not in present:
        raise FileNotFoundError(f"no config.json in {folder} (files: {present})")
    return json.loads((folder / "config.json").read_text())


def weight_files(folder: Path) -> list[Path]:
    """The files holding the weights: the shards of an index, one safetensors, or a .bin.

    A shard named by the index but absent is an error here, before any tensor is read.
    """
    index = folder / INDEX_FILE
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [n for n in names if not (folder / n).exists()]
        if missing:
            raise CheckpointError(f"{folder}: {INDEX_FILE} names shards that are missing: "
                                  f"{listing(missing)}")
        return [folder / n for n in names]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).exists():
            return [folder / name]
    raise CheckpointError(f"{folder}: no weights (model.safetensors, {INDEX_FILE} or "
                          "pytorch_model.bin)")


def read_weights(folder: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint in its stored dtype, on the CPU, ``prefix`` removed.

    With a ``prefix``, a key without it is an error (it would otherwise be silently dropped).
    """
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for file in weight_files(folder):
        if file.suffix == ".safetensors":
            part = load_file(str(file), device="cpu")
        else:
            part = torch.load(file, map_location="cpu", weights_only=True)
            if not isinstance(part, dict):
                raise CheckpointError(f"{file} does not hold a state dict")
        state.update(part)
    if prefix:
        bare = [k for k in state if not k.startswith(prefix)]
        if bare:
            raise CheckpointError(
                f"{folder}: unexpected keys without the {prefix!r} prefix: {listing(bare)}"
            )
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def check_shapes(state: dict, want: dict[str, tuple[int, ...]], source: str, what: str,
                 optional: tuple[str, ...] = ()) -> None:
    """Raise CheckpointError naming every missing, unexpected or mis-shaped tensor."""
    missing = [k for k in want if k not in state and k not in optional]
    unexpected = [k for k in state if k not in want]
    wrong = [f"{k}: {tuple(state[k].shape)} in {source}, {want[k]} expected"
             for k in want if k in state and tuple(state[k].shape) != want[k]]
    found = [("missing keys", missing), ("unexpected keys", unexpected),
             ("shape mismatches", wrong)]
    if missing or unexpected or wrong:
        detail = "; ".join(f"{label}: {listing(items)}" for label, items in found if items)
        raise CheckpointError(f"{source} does not fit {what}: {detail}")


def load_into(module: nn.Module, state: dict, source: str, dtype: Any = None,
              device: Any = None) -> nn.Module:
    """Fill a module built on the meta device with ``state``, strictly, without a float32 copy.

    Each tensor is cast only when ``dtype`` differs from its stored dtype (then one tensor at a
    time). Non-persistent buffers are the module's to rebuild after this call.
    """
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    check_shapes(state, want, source, type(module).__name__)
    dtype = parse_dtype(dtype)
    if dtype is not None:
        for k in list(state):
            if state[k].is_floating_point() and state[k].dtype != dtype:
                state[k] = state[k].to(dtype)
    module.load_state_dict(state, strict=True, assign=True)
    return module.to(device=device).eval() if device is not None else module.eval()


def load_tokenizer(name_or_path: str | os.PathLike, warn: bool = True) -> Any:
    """A transformers tokenizer from a folder or hub id (cache only when offline), or None."""
    try:
        from transformers import AutoTokenizer

        folder = Path(name_or_path)
        if folder.is_dir() and not any((folder / f).exists() for f in TOKENIZER_FILES):
            # Recent transformers build an empty tokenizer (one token) from a model folder
            # that holds none: that must read as "no tokenizer", not as a 1-token vocabulary.
            raise FileNotFoundError(f"no tokenizer file in {folder}")
        return AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=False)
    except Exception as err:  # missing files and offline misses surface as several types
        if warn:
            warnings.warn(
                f"no tokenizer loaded from {str(name_or_path)!r} ({type(err).__name__}); "
                "continuing with tokenizer=None (token ids still work; text I/O and "
                "tokenizer checks will not)",
                stacklevel=2,
            )
        return None


def has_tokenizer(folder: Path) -> bool:
    return any((folder / f).exists() for f in TOKENIZER_FILES)
