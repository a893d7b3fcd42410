"""Load a transformers causal LM and its tokenizer as an ``HFCausalLM``."""

from __future__ import annotations

import os
import warnings
from typing import Any

from .adapter import HFCausalLM
from .kv_cache import check_kind

__all__ = ["load_ar"]


def load_ar(
    name_or_path: str | os.PathLike,
    device: Any = None,
    dtype: Any = None,
    trust_remote_code: bool = False,
    cache: str = "dynamic",
    compile_step: bool = False,
) -> HFCausalLM:
    """Load a transformers causal LM (hub id or folder) and its tokenizer as an HFCausalLM.

    ``dtype`` may be a torch dtype or its name ("float32", "bfloat16", "float16"; log-probs
    are returned in float32 whatever it is); remote code runs only if the caller asks.
    ``cache`` and ``compile_step`` choose the incremental KV cache (see ``HFCausalLM``).
    """
    check_kind(cache, compile_step)
    from transformers import AutoModelForCausalLM

    from ..hub import load_tokenizer, parse_dtype

    dtype = parse_dtype(dtype)
    try:
        kwargs = {} if dtype is None else {"dtype": dtype}
        model = AutoModelForCausalLM.from_pretrained(
            str(name_or_path), trust_remote_code=trust_remote_code, **kwargs
        )
    except OSError as err:
        raise OSError(
            f"could not load the AR model {str(name_or_path)!r}: {err}. HF_HUB_OFFLINE="
            f"{os.environ.get('HF_HUB_OFFLINE', 'unset')}: offline runs need it in the local "
            "hub cache or a local folder."
        ) from err
    if device is not None:
        model = model.to(device)
    tokenizer = _usable_tokenizer(load_tokenizer(name_or_path), int(model.config.vocab_size),
                                  name_or_path)
    return HFCausalLM(model, tokenizer=tokenizer, cache=cache, compile_step=compile_step)


def _usable_tokenizer(tokenizer: Any, model_vocab: int, where: Any) -> Any:
    """The tokenizer, or None when it cannot be the model's own.

    transformers builds an empty tokenizer (special tokens only) for a folder that has a
    model's weights and config but no tokenizer files; taken at its word it would shrink the
    vocabulary to a token or two. Fewer than half the model's embedding rows means the files
    are missing: warn and run on token ids only.
    """
    if tokenizer is None or len(tokenizer) * 2 >= model_vocab:
        return tokenizer
    warnings.warn(
        f"{str(where)!r} has weights for {model_vocab} token ids but its tokenizer knows only "
        f"{len(tokenizer)} (no tokenizer.json, nor vocab.json with merges.txt, in the folder); "
        "running on token ids only (no text, no tokenizer checks). Copy the tokenizer files "
        "into the folder to get them back.",
        stacklevel=3,
    )
    return None
