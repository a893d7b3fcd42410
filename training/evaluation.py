"""Validation losses of a model being trained: a fixed subset during training, every window
at the end."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor


@torch.no_grad()
def mean_over_windows(per_token, windows: Tensor, batch_size: int, device) -> float:
    """Mean of ``per_token(x) -> (B, L)`` over every token of ``windows`` (W, L)."""
    total, count = 0.0, 0
    for chunk in windows.split(batch_size):
        vals = per_token(chunk.to(device)).float()
        total, count = total + vals.sum().item(), count + vals.numel()
    return total / max(count, 1)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device):
    # bf16 only on GPU: on CPU it saved little and the DDiT keeps its norms in fp32 anyway.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def evaluate(recipe, model, windows, info, seed, batch_size, device) -> float:
    """Validation loss on a fixed window subset with a fixed generator (comparable over time)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with autocast(device):
        value = mean_over_windows(lambda x: recipe.per_token(model, x, info, gen),
                                   windows, batch_size, device)
    model.train()
    return value


def final_metrics(recipe, model, windows: Tensor, info, seed: int, batch_size: int, device,
                  dtype: torch.dtype) -> tuple[torch.nn.Module, dict]:
    """The recipe's final metrics on every held-out window, for the weights as stored.

    The model is rounded to ``dtype`` (the saved precision) and back before measuring, so the
    figures describe exactly the weights on disk. Returns (that model in eval mode, metrics).
    """
    model = model.to(dtype).float().eval()
    gen = torch.Generator().manual_seed(seed + 2)
    with autocast(device):
        metrics = recipe.metrics(model, windows, info, gen, batch_size, device)
    return model, metrics
