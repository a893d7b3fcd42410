"""Denoiser adapters: a DDiT backbone seen as per-position marginals log p(x0_i | x_t).

Both adapters satisfy ``decoding.protocols.Denoiser``. They differ only in what the backbone
is told about the noise level and in how its output was trained to be read:

* MDLM (Sahoo et al. 2024, "SUBS" parameterization, Eq. 8-10): the logits are the denoising
  distribution itself once the MASK column is removed (set to -inf) and the rest normalised.
* SEDD-absorb (Lou et al. 2024, Sec. 3-4): the output is a log *concrete score*. At a masked
  position the true score is s(x_t)_y = p(x0_i = y | x_t) · α_t / (1 - α_t), so it is the
  denoising distribution times a factor that depends on t only. SEDD's network output adds
  further per-row offsets (-log expm1(σ) - log V from ``scale_by_sigma``, and the entry of the
  current token set to 0, which at a masked position is the MASK column). All of these are
  constant across the real-token columns of a row or sit in the MASK column, so dropping the
  MASK column and normalising with a log-softmax over the V real tokens removes every one of
  them: p(x0_i | x_t) = softmax(raw_logits[..., :V]).

Rows at unmasked positions are returned as the model's normalised output (not a copy of the
token): the protocol leaves them unused, and keeping them finite lets callers subtract rows.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from decoding.cache import CacheCall, rows_at
from decoding.checks import device_check
from decoding.schedules import EPS, LogLinear, Schedule, loglinear_sigma

from .backbone import DDiT
from .cached import cached_features
from .output_head import head_log_probs

__all__ = ["MDLMDenoiser", "SEDDDenoiser", "loglinear_sigma"]


class _DDiTDenoiser(nn.Module):
    """Shared input checks and output head; subclasses choose the noise input.

    ``schedule`` is the noise schedule the network was trained with (log-linear with the
    given ε): its time t is what ``log_probs`` takes, and its σ(t) is the noise input. The
    engine maps a sampler's time to this one (``decoding.schedules.denoiser_time``).
    """

    parameterization: str = ""
    supports_causal: bool = True
    supports_rows: bool = True
    supports_cache: tuple[str, ...] = ("prefix", "dual")
    time_conditioned: bool = True

    def __init__(self, backbone: DDiT, eps: float = EPS, tokenizer: Any = None):
        super().__init__()
        if not isinstance(backbone, DDiT):
            raise TypeError(f"backbone must be a models.ddit.DDiT, got {type(backbone).__name__}")
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {eps}")
        self.backbone = backbone
        self.eps = float(eps)
        self.schedule: Schedule = LogLinear(self.eps)
        self.vocab_size = backbone.config.vocab_size - 1
        self.mask_id = self.vocab_size
        self.max_length = backbone.config.max_length
        self.tokenizer = tokenizer
        if tokenizer is not None:
            self._check_tokenizer(tokenizer)

    def _check_tokenizer(self, tokenizer: Any) -> None:
        # A tokenizer may list the mask itself as its last id (V); anything beyond, or a mask
        # token elsewhere, means the ids do not fit this model.
        n, tok_mask = len(tokenizer), getattr(tokenizer, "mask_token_id", None)
        if tok_mask is not None and tok_mask != self.mask_id:
            raise ValueError(
                f"the tokenizer's mask token has id {tok_mask}, the denoiser's mask id is "
                f"{self.mask_id}"
            )
        if n > self.vocab_size + (tok_mask is not None):
            raise ValueError(
                f"the tokenizer has {n} tokens but the denoiser only {self.vocab_size} real "
                f"ones (mask id {self.mask_id})"
            )

    def noise_input(self, t: Tensor) -> Tensor:
        """(B,) diffusion time -> (B,) float noise level fed to the backbone."""
        raise NotImplementedError

    def _check(self, x: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        if not isinstance(x, Tensor) or x.dim() != 2:
            raise ValueError(f"x must be a (B, L) tensor, got {getattr(x, 'shape', type(x))}")
        if x.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"x must hold integer token ids, got dtype {x.dtype}")
        b, length = x.shape
        if length > self.max_length:
            raise ValueError(
                f"sequence length {length} exceeds the denoiser's max_length {self.max_length}"
            )
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device)
        if t.dim() == 0:
            t = t.expand(b)
        if t.shape != (b,):
            raise ValueError(f"t must be a scalar or (B,) = ({b},), got shape {tuple(t.shape)}")
        if b == 0:
            return x.long(), t
        # Queued on the device (no host read on a GPU; see decoding.checks).
        ext = [x.min(), x.max()] if length else [x.new_zeros(()), x.new_zeros(())]
        ends = torch.stack([*(e.float() for e in ext), t.min(), t.max()])
        device_check((ends[0] >= 0) & (ends[1] <= self.mask_id), lambda: (
            f"token ids must lie in [0, {self.vocab_size}) or equal the mask id "
            f"{self.mask_id}; got values in [{int(ends[0])}, {int(ends[1])}]"))
        device_check((ends[2] >= 0) & (ends[3] <= 1), lambda: (
            f"t must lie in [0, 1], got values in [{float(ends[2])}, {float(ends[3])}]"))
        return x.long(), t

    def cache_block(self, causal: bool) -> int | None:
        """Attention structure for ``decoding.cache``: causal calls are exact (1), the
        bidirectional ones approximate (None)."""
        return 1 if causal else None

    def log_probs(self, x: Tensor, t: Tensor | float, causal: bool = False,
                  rows: Tensor | None = None, cache: CacheCall | None = None) -> Tensor:
        """log p(x0_i = v | x_t) for every position, or for the positions in ``rows``.

        Args:
            x: (B, L) long, real tokens or ``mask_id``.
            t: (B,) float diffusion time in [0, 1] (a scalar is broadcast).
            causal: position i attends to positions <= i only; its own input is the mask
                wherever its row is used, so this is the prefix-only context ``x[:, :i]``.
            rows: optional (B, L) bool, the positions whose rows are wanted.
            cache: a ``decoding.cache.CacheCall``: only its positions run, the other keys
                and values come from (and theirs go to) its store; ``rows`` must lie among
                those positions, and the rows come back packed.

        Returns:
            float32 normalised over the V real tokens: (B, L, V), or (n, V) for the n True
            entries of ``rows`` in row-major order. The output head runs in chunks and only
            on the rows returned (``models.ddit.output_head``).
        """
        x, t = self._check(x, t)
        if rows is not None and (rows.dtype != torch.bool or rows.shape != x.shape):
            raise ValueError(f"rows must be a (B, L) = {tuple(x.shape)} bool mask, got "
                             f"{rows.dtype} {tuple(rows.shape)}")
        linear = self.backbone.output_layer.linear
        if cache is not None:
            feats, pos = cached_features(self.backbone, x, self.noise_input(t), cache, causal)
            return head_log_probs(feats, linear.weight, linear.bias, self.vocab_size,
                                  rows_at(rows, pos))
        feats = self.backbone.head_features(x, self.noise_input(t), causal=causal)
        return head_log_probs(feats, linear.weight, linear.bias, self.vocab_size, rows)

    def log_probs_with_mass(self, x: Tensor, t: Tensor | float,
                            rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The marginals and the log of the score's total mass, from one forward.

        Returns ((B, L, V) float32 as ``log_probs``, (B, L) float32 log Σ_y s(x_t)_y over the
        real tokens y). At a masked position the true score is p(x0_i = y | x_t)·α_t/(1-α_t)
        (SEDD, absorbing graph), so the mass is what SEDD's own samplers reveal by. With
        ``rows`` (B, L) bool, the marginals are packed (n, V) as in ``log_probs`` and the
        mass is -inf outside ``rows``.
        """
        x, t = self._check(x, t)
        feats = self.backbone.head_features(x, self.noise_input(t))
        linear = self.backbone.output_layer.linear
        lp = head_log_probs(feats, linear.weight, linear.bias, self.vocab_size, rows)
        t_pos = t[:, None].expand(x.shape)
        if rows is None:
            return lp, self._log_mass(t_pos, feats, lp)
        mass = torch.full(x.shape, -torch.inf, device=x.device)
        mass[rows] = self._log_mass(t_pos[rows], feats[rows], lp)
        return lp, mass

    def _log_mass(self, t: Tensor, feats: Tensor, lp: Tensor) -> Tensor:
        """log mass of each row: t (...), feats (..., H), log-probs (..., V) -> (...)."""
        raise NotImplementedError

    def forward(self, x: Tensor, t: Tensor | float, causal: bool = False) -> Tensor:
        return self.log_probs(x, t, causal=causal)

    def extra_repr(self) -> str:
        return (
            f"parameterization={self.parameterization}, vocab_size={self.vocab_size}, "
            f"mask_id={self.mask_id}, max_length={self.max_length}, "
            f"time_conditioned={self.time_conditioned}"
        )


class MDLMDenoiser(_DDiTDenoiser):
    """MDLM with the SUBS parameterization (Sahoo et al. 2024).

    Args:
        backbone: a DDiT whose ``vocab_size`` is V+1 (the last row is MASK).
        time_conditioning: if False (as for ``kuleshov-group/mdlm-owt``) the backbone's noise
            input is zero, since the optimal masked denoiser does not depend on t given the
            mask pattern; if True it gets σ(t) of the log-linear schedule.
        eps: the schedule's ε, mask probability (1-ε)·t.
        tokenizer: optional tokenizer sharing the ids (kept for checks and decoding at edges).
    """

    parameterization = "mdlm"

    def __init__(
        self,
        backbone: DDiT,
        time_conditioning: bool = False,
        eps: float = EPS,
        tokenizer: Any = None,
    ):
        super().__init__(backbone, eps=eps, tokenizer=tokenizer)
        self.time_conditioned = bool(time_conditioning)

    @property
    def time_conditioning(self) -> bool:
        return self.time_conditioned

    def noise_input(self, t: Tensor) -> Tensor:
        if not self.time_conditioned:
            return torch.zeros_like(t, dtype=torch.float32)
        return self.schedule.sigma(t)

    def _log_mass(self, t: Tensor, feats: Tensor, lp: Tensor) -> Tensor:
        # SUBS outputs the denoising distribution itself: its score mass is the ideal one, so
        # SEDD's samplers reveal a masked position with exactly the posterior's probability.
        return self.schedule.ideal_log_mass(t)


class SEDDDenoiser(_DDiTDenoiser):
    """SEDD with the absorbing graph and the log-linear noise (Lou et al. 2024).

    The backbone is conditioned on σ(t) = -log(1 - (1-ε) t). ``log_probs`` turns the log-score
    into p(x0_i | x_t) as explained in the module docstring; ``log_score`` gives SEDD's own
    output for samplers that want it.

    Args:
        backbone: a DDiT whose ``vocab_size`` is V+1.
        eps: the schedule's ε.
        tokenizer: optional tokenizer sharing the ids.
        scale_by_sigma: whether the checkpoint was trained with SEDD's ``scale_by_sigma`` (only
            ``log_score`` depends on it; the public checkpoints use True).
    """

    parameterization = "sedd"
    time_conditioned = True

    def __init__(
        self,
        backbone: DDiT,
        eps: float = EPS,
        tokenizer: Any = None,
        scale_by_sigma: bool = True,
    ):
        super().__init__(backbone, eps=eps, tokenizer=tokenizer)
        self.scale_by_sigma = bool(scale_by_sigma)

    def noise_input(self, t: Tensor) -> Tensor:
        return self.schedule.sigma(t)

    def _log_mass(self, t: Tensor, feats: Tensor, lp: Tensor) -> Tensor:
        # logsumexp of the raw logits = logit - log p at any one token; taking each row's most
        # likely token keeps it exact in float32 and costs (B, L, H), not another (B, L, V).
        top = lp.argmax(dim=-1, keepdim=True)
        linear = self.backbone.output_layer.linear
        logit = (feats.float() * linear.weight[top[..., 0]].float()).sum(-1)
        if linear.bias is not None:
            logit = logit + linear.bias[top[..., 0]].float()
        log_mass = logit - lp.gather(-1, top)[..., 0]
        if self.scale_by_sigma:
            log_mass = log_mass - self._score_offset(t)
        return log_mass

    def _score_offset(self, t: Tensor) -> Tensor:
        """log(expm1(σ)) + log V, subtracted from the logits under ``scale_by_sigma``; (B,)."""
        return torch.log(torch.expm1(self.noise_input(t))) + math.log(self.vocab_size)

    def log_score(self, x: Tensor, t: Tensor | float, causal: bool = False) -> Tensor:
        """SEDD's log concrete score, (B, L) -> (B, L, V+1) float32 (current token's entry 0)."""
        x, t = self._check(x, t)
        sigma = self.noise_input(t)
        out = self.backbone(x, sigma, causal=causal)
        if self.scale_by_sigma:
            # expm1 is exact for small σ where exp(σ) - 1 would cancel.
            out = out - torch.log(torch.expm1(sigma))[:, None, None] - math.log(self.vocab_size)
        return out.scatter(-1, x[..., None], 0.0)
