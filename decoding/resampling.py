"""Importance-resampling utilities shared by the two-model guides (float64 throughout)."""

from __future__ import annotations

import torch
from torch import Tensor

METHODS = ("multinomial", "systematic")


def normalized_weights(log_w: Tensor, temperature: float = 1.0) -> Tensor:
    """(B, K) log-weights -> (B, K) float64 weights summing to 1 per row.

    ``temperature`` > 1 flattens the weights (a tempered target, between proposal and target).
    Rows where every weight is -inf (no candidate has support under the target) fall back to
    uniform weights instead of producing NaN.
    """
    lw = log_w.to(torch.float64) / temperature
    dead = ~torch.isfinite(lw.amax(dim=1, keepdim=True))
    lw = torch.where(dead, torch.zeros_like(lw), lw)
    return torch.softmax(lw, dim=1)


def effective_sample_size(weights: Tensor) -> Tensor:
    """(B, K) normalised weights -> (B,) ESS = 1 / sum w^2, in [1, K]."""
    return 1.0 / (weights * weights).sum(dim=1)


def resample(weights: Tensor, num: int, generator: torch.Generator,
             method: str = "multinomial") -> Tensor:
    """Draw ``num`` candidate indices per row from (B, K) normalised weights -> (B, num) long.

    ``multinomial`` uses ``num`` independent uniforms per row; ``systematic`` one uniform per
    row shifted over ``num`` evenly spaced points (lower variance when ``num`` > 1; for one
    survivor the two coincide). Rows are resampled independently: candidates never move
    between rows. With a single candidate no random number is drawn, so K = 1 consumes the
    generator exactly like a guide without resampling.
    """
    if method not in METHODS:
        raise ValueError(f"resampling must be one of {METHODS}, got {method!r}")
    B = weights.shape[0]
    dev = weights.device
    if weights.shape[1] == 1:
        return torch.zeros(B, num, dtype=torch.long, device=dev)
    if method == "multinomial":
        u = torch.rand(B, num, dtype=torch.float64, device=dev, generator=generator)
    else:
        u0 = torch.rand(B, 1, dtype=torch.float64, device=dev, generator=generator)
        u = (u0 + torch.arange(num, dtype=torch.float64, device=dev)) / num
    cdf = weights.cumsum(dim=1)
    idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    return idx.clamp_(max=weights.shape[1] - 1)
