"""The masked-diffusion ELBO of a continuation given a prompt, estimated by Monte Carlo.

For x = (prompt, continuation) with n continuation tokens, the absorbing-state bound (MDLM,
Sahoo et al. 2024, Eq. 10 with the linear masking probability; LLaDA, Nie et al. 2025, Eq. 6
for the conditional form) is

    log p(cont | prompt) >= E_M [ w(M) * sum_{i in M} log p_theta(x_i | x with M masked) ]

where M is a random set of masked continuation positions (the prompt is never masked). Two
ways of drawing M, both unbiased for the same quantity:

* ``count`` (LLaDA's evaluation): l ~ U{1..n}, M a uniform l-subset, w = n / l.
* ``time`` (the continuous form): u ~ U(0, 1], each position masked with probability u,
  w = 1 / u (an empty M contributes 0).

Both expectations equal sum_{l=1}^{n} E_{|M|=l}[(1/l) sum_{i in M} log p(x_i | x_~M)]: the
any-order autoregressive log-likelihood averaged over the n! orders (at step k of an order,
the context is a uniform (k-1)-subset and the predicted position a uniform one of the rest).
For each order that is the log of a normalised distribution q_order(cont), so by Jensen the
bound lies below log E_order q_order(cont); with the exact conditionals every q_order is
p(cont | prompt) itself and the bound is an identity (``tests/test_elbo.py`` checks it by
enumeration on the HMM oracle, and the estimator within its standard error).

Each Monte Carlo sample is one masked copy of x; copies are scored ``batch_size`` at a time,
each batch one denoiser forward that returns only the masked rows when the denoiser supports
it (``decoding.protocols.Denoiser.supports_rows``). The masks are drawn on the CPU from the
caller's generator, so an estimate does not depend on the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from decoding.schedules import training_schedule

SCHEMES = ("count", "time")


@dataclass
class Estimate:
    """An ELBO estimate in nats: the mean of ``num_samples`` values and its standard error
    (sample standard deviation over sqrt(num_samples); 0 with one sample). ``forwards`` is
    the number of denoiser forwards spent."""

    value: float
    se: float
    num_samples: int
    forwards: int


def _device(model) -> torch.device:
    if isinstance(model, torch.nn.Module):
        for p in list(model.parameters()) + list(model.buffers()):
            return p.device
    return torch.device(getattr(model, "device", "cpu"))


class ELBO:
    """Monte Carlo ELBO of continuations under a masked-diffusion denoiser.

    Args:
        denoiser: a ``decoding.protocols.Denoiser``.
        num_samples: masked copies per estimate (LLaDA's evaluation uses 128).
        batch_size: copies per denoiser forward.
        scheme: ``count`` (LLaDA: a uniform number of masks) or ``time`` (a uniform masking
            probability); see the module docstring.
        stratified: draw the number of masks (or the masking probability) on an evenly spaced
            grid with one random offset instead of independently: lower variance, the same
            expectation; the reported standard error is then the independent-draws formula,
            an overestimate.
    """

    def __init__(self, denoiser, num_samples: int = 128, batch_size: int = 32,
                 scheme: str = "count", stratified: bool = False):
        for name, value in (("num_samples", num_samples), ("batch_size", batch_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
        self.denoiser, self.num_samples, self.batch_size = denoiser, num_samples, batch_size
        self.scheme, self.stratified = scheme, bool(stratified)
        self.mask_id = int(denoiser.mask_id)
        self.schedule = training_schedule(denoiser)

    def draw_masks(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(S, n) bool masks over the continuation and (S,) float64 weights w(M)."""
        s = self.num_samples
        offset = torch.rand((), generator=generator, dtype=torch.float64)
        grid = (torch.arange(s, dtype=torch.float64) + offset) / s  # (S,) in [0, 1)
        if self.scheme == "count":
            if self.stratified:
                counts = (grid * n).long() + 1
            else:
                counts = torch.randint(1, n + 1, (s,), generator=generator)
            ranks = torch.rand(s, n, generator=generator).argsort(dim=1).argsort(dim=1)
            return ranks < counts[:, None], n / counts.double()
        rate = 1.0 - (grid if self.stratified else torch.rand(s, generator=generator,
                                                               dtype=torch.float64))
        masks = torch.rand(s, n, generator=generator, dtype=torch.float64) < rate[:, None]
        return masks, 1.0 / rate

    def sample_values(self, tokens: Tensor, num_prompt: int, masks: Tensor) -> Tensor:
        """(S,) float64 sum_{i in M} log p(x_i | x_~M) for each mask (S, n) over the
        continuation of ``tokens`` (L,); one forward per ``batch_size`` masks."""
        tokens = torch.as_tensor(tokens, dtype=torch.long).cpu()
        length = tokens.numel()
        device = _device(self.denoiser)
        out = []
        for start in range(0, masks.shape[0], self.batch_size):
            m = masks[start : start + self.batch_size]
            full = torch.zeros(m.shape[0], length, dtype=torch.bool)
            full[:, num_prompt:] = m
            x = tokens.expand(m.shape[0], -1).masked_fill(full, self.mask_id)
            frac = m.double().mean(dim=1)
            t = torch.tensor([float(self.schedule.time_at(1.0 - float(f))) for f in frac],
                             dtype=torch.float32)
            out.append(self._scored(x.to(device), t.to(device), full.to(device),
                                    tokens.to(device)).cpu())
        return torch.cat(out)

    def _scored(self, x: Tensor, t: Tensor, full: Tensor, tokens: Tensor) -> Tensor:
        with torch.inference_mode():
            if getattr(self.denoiser, "supports_rows", False):
                rows = self.denoiser.log_probs(x, t, rows=full)  # (k, V), row-major
            else:
                rows = self.denoiser.log_probs(x, t)[full]
            target = tokens.expand(x.shape[0], -1)[full]
            picked = rows.gather(-1, target[:, None]).squeeze(-1).double()
            which = full.nonzero()[:, 0]
            return torch.zeros(x.shape[0], dtype=torch.float64,
                               device=x.device).index_add_(0, which, picked)

    def estimate(self, tokens, num_prompt: int, generator: torch.Generator) -> Estimate:
        """The ELBO of ``tokens[num_prompt:]`` given ``tokens[:num_prompt]``.

        Args:
            tokens: (L,) real token ids (a list or a tensor), L <= the denoiser's maximum.
            num_prompt: how many leading tokens are the (never masked) prompt; 0 scores the
                whole sequence unconditionally.
            generator: a CPU ``torch.Generator`` for the masks.
        """
        tokens = torch.as_tensor(tokens, dtype=torch.long).cpu()
        n = tokens.numel() - int(num_prompt)
        if not 0 <= num_prompt <= tokens.numel():
            raise ValueError(f"num_prompt {num_prompt} outside 0..{tokens.numel()}")
        if n == 0:
            return Estimate(0.0, 0.0, 0, 0)
        masks, weights = self.draw_masks(n, generator)
        values = weights * self.sample_values(tokens, int(num_prompt), masks)
        se = float(values.std(unbiased=True)) / math.sqrt(len(values)) if len(values) > 1 \
            else 0.0
        return Estimate(float(values.mean()), se, len(values),
                        math.ceil(len(values) / self.batch_size))
