"""KV caches for the AR adapter: transformers' dynamic cache, or a static one preallocated to L.

The dynamic cache (the default) grows by concatenation and is the faster choice on a CPU. The
static cache holds keys and values of shape (B, heads, L_max, d) allocated once; ``crop`` only
moves the length pointer back (stale entries past it are overwritten by the next tokens and
are never attended meanwhile, since attention is causal), and ``reorder`` is an index_select
over the batch rows. Fixed shapes and addresses are what make the single-token step capturable
as a CUDA graph (``torch.compile(mode="reduce-overhead")``), the lever against a launch-bound
AR decoding loop.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

KINDS = ("dynamic", "static")


def check_kind(kind: str, compile_step: bool) -> None:
    """Fail loudly on an unknown cache kind or a compiled step without a static cache."""
    if kind not in KINDS:
        raise ValueError(f"AR cache must be one of {KINDS}, got {kind!r}")
    if compile_step and kind != "static":
        raise ValueError("compile_step=True needs cache='static' (a graph needs fixed shapes)")


def new_cache(model: nn.Module, kind: str, max_length: int | None) -> Any:
    """An empty transformers cache of ``kind`` for ``model`` (static: room for ``max_length``)."""
    from transformers import DynamicCache, StaticCache

    config = model.config
    if getattr(config, "sliding_window", None):
        # Full layers for a windowed model: its own attention mask still enforces the window,
        # and every position stays cached, so ``crop`` can return behind the window (DCD).
        config = copy.copy(config)
        config.sliding_window = None
    if kind == "dynamic":
        try:
            return DynamicCache(config=config)
        except TypeError:  # transformers 4.x takes no config
            return DynamicCache()
    if max_length is None:
        raise ValueError("a static AR cache needs the model's maximum length (n_positions)")
    return StaticCache(config=config, max_cache_len=int(max_length))


def compiled_step(model: nn.Module, device: torch.device):
    """The model's forward compiled for CUDA-graph replay of a one-token step (CUDA only)."""
    if device.type != "cuda":
        raise ValueError(f"compile_step=True captures CUDA graphs; the AR model is on {device}. "
                         "Use it on a CUDA device (the plain step is used on a CPU).")
    return torch.compile(model, mode="reduce-overhead", dynamic=False)
