"""Noise schedules of the absorbing (masking) process and the per-step time grid.

A schedule gives alpha(t), the probability that a position is *unmasked* at time t in [0, 1]
(alpha(1) ~ 0: all masked, alpha(0) = 1: clean), and the total noise sigma(t) = -log alpha(t)
that SEDD/MDLM networks take as their noise input. A T-step sampler walks the uniform grid
t_j = 1 - j/T, j = 0..T, so the last step always lands on s = 0 and reveals everything left.

Reverse step t -> s for a masked position (Austin et al. 2021; MDLM eq. 7; SEDD's analytic
sampler): it becomes a real token with probability (alpha_s - alpha_t) / (1 - alpha_t).

This module is the one owner of the schedule's formulas: the denoisers' noise input, the
training losses and the engine's time mapping all use it. A denoiser declares the schedule it
was trained with (``schedule`` attribute, default ``LogLinear()``); when the engine samples
under another one, ``denoiser_time`` maps each step's time to the denoiser's own time with the
same alpha, so the noise level the network sees matches the mask rate of the chain.
``alpha``, ``time_at`` and ``sigma`` take a float or a tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

EPS = 1e-3  # SEDD/MDLM: the log-linear schedule masks with probability (1 - EPS) t


def _lib(t):
    """``torch`` for tensors, ``math`` for floats (the functions used share their names)."""
    return torch if isinstance(t, Tensor) else math


def _clamp01(t):
    return t.clamp(0.0, 1.0) if isinstance(t, Tensor) else min(1.0, max(0.0, t))


def loglinear_sigma(t, eps: float = EPS):
    """Total noise of the log-linear schedule, sigma(t) = -log(1 - (1 - eps) t)."""
    if isinstance(t, Tensor):
        return -torch.log1p(-(1.0 - eps) * (t if t.is_floating_point() else t.float()))
    return -math.log1p(-(1.0 - eps) * t)


class Schedule:
    """Base class: subclasses define ``alpha``, its inverse ``time_at`` and ``sigma_rate``."""

    def alpha(self, t):
        raise NotImplementedError

    def time_at(self, alpha):
        """The time in [0, 1] at which the schedule reaches ``alpha`` (clamped to [0, 1])."""
        raise NotImplementedError(f"{type(self).__name__} has no inverse (time_at)")

    def sigma(self, t):
        """Total noise sigma(t) = -log alpha(t) (inf where alpha is 0)."""
        a = self.alpha(t)
        if isinstance(a, Tensor):
            return -torch.log(a)
        return -math.log(a) if a > 0 else math.inf

    def ideal_log_mass(self, t: Tensor) -> Tensor:
        """log of alpha_t / (1 - alpha_t), (B,) -> (B,): the total mass over real tokens of the
        true concrete score at a masked position (SEDD, Lou et al. 2024, absorbing graph)."""
        return -torch.log(torch.expm1(self.sigma(t.double()))).float()

    def sigma_rate(self, t: float) -> float:
        """d sigma / dt at t (SEDD's Euler step uses it)."""
        raise NotImplementedError(f"{type(self).__name__} has no sigma_rate")

    def times(self, steps: int) -> list[float]:
        """The grid [t_0 = 1, ..., t_T = 0] of a ``steps``-step sampler."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return [1.0 - j / steps for j in range(steps)] + [0.0]

    def revealed_fraction(self, t: float) -> float:
        """Share of the generated positions that are unmasked at time t, scaled to [0, 1]."""
        a1 = self.alpha(1.0)
        return (self.alpha(t) - a1) / (1.0 - a1)


@dataclass(frozen=True)
class LogLinear(Schedule):
    """SEDD/MDLM: sigma(t) = -log(1 - (1-eps) t), so alpha_t = 1 - (1-eps) t."""

    eps: float = EPS

    def __post_init__(self):
        if not 0.0 <= self.eps < 1.0:
            raise ValueError(f"LogLinear eps must be in [0, 1), got {self.eps}")

    def alpha(self, t):
        return 1.0 - (1.0 - self.eps) * t

    def time_at(self, alpha):
        return _clamp01((1.0 - alpha) / (1.0 - self.eps))

    def sigma(self, t):
        return loglinear_sigma(t, self.eps)

    def sigma_rate(self, t):
        return (1.0 - self.eps) / (1.0 - (1.0 - self.eps) * t)


@dataclass(frozen=True)
class Linear(Schedule):
    """alpha_t = 1 - t: the same number of positions revealed at every step."""

    def alpha(self, t):
        return 1.0 - t

    def time_at(self, alpha):
        return _clamp01(1.0 - alpha)

    def sigma_rate(self, t):
        return 1.0 / (1.0 - t) if t < 1 else math.inf


@dataclass(frozen=True)
class Cosine(Schedule):
    """MaskGIT's cosine schedule: mask ratio cos(pi r / 2) at progress r = 1 - t.

    Few positions are revealed early (when little context exists) and more towards the end.
    """

    def alpha(self, t):
        return 1.0 - _lib(t).sin(0.5 * math.pi * t)

    def time_at(self, alpha):
        return _lib(alpha).asin(1.0 - _clamp01(alpha)) * (2.0 / math.pi)

    def sigma_rate(self, t):
        a = self.alpha(t)
        return 0.5 * math.pi * math.cos(0.5 * math.pi * t) / a if a > 0 else math.inf


DEFAULT_TRAINING = LogLinear()


def training_schedule(denoiser) -> Schedule:
    """The schedule a denoiser was trained with (``schedule`` attribute, else log-linear)."""
    schedule = getattr(denoiser, "schedule", None)
    if schedule is None:
        return DEFAULT_TRAINING
    if not isinstance(schedule, Schedule):
        raise TypeError(f"the denoiser's `schedule` must be a decoding.schedules.Schedule, got "
                        f"{type(schedule).__name__}")
    return schedule


def check_pairing(sampling: Schedule, training: Schedule) -> None:
    """Fail loudly when steps of ``sampling`` cannot be mapped to ``training``'s times.

    The noisy end needs no check: a chain starts fully masked whatever alpha(1) says, so a
    sampling alpha below the denoiser's lowest one maps to the denoiser's own t = 1, the
    state it is given at the first step under its own schedule too.
    """
    if sampling == training:
        return
    try:
        training.time_at(0.5)
    except NotImplementedError as err:
        raise ValueError(f"cannot sample with {sampling} a denoiser trained with {training}: "
                         f"{err}, so no time of the denoiser matches the sampler's mask rate") \
            from err


def denoiser_time(t: float, sampling: Schedule, training: Schedule) -> float:
    """The denoiser's own time whose alpha equals the sampler's alpha(t); t itself if the
    schedules are the same."""
    if sampling == training:
        return t
    return float(training.time_at(sampling.alpha(t)))
