"""Training losses for the tiny models.

MDLM (Sahoo et al. 2024, "Simple and Effective Masked Diffusion Language Models"): the
continuous-time negative ELBO of the absorbing process (their eq. 10),

    L = E_{t~U(0,1]} E_{x_t~q(.|x_0)} [ -α'_t/(1-α_t) · Σ_{i: x_t^i = MASK} -log p_θ(x_0^i|x_t) ]

with the log-linear schedule σ(t) = -log(1 - (1-ε)t), α_t = e^{-σ(t)} = 1 - (1-ε)t. Then each
position is masked with probability (1-ε)t and the weight -α'_t/(1-α_t) is exactly 1/t.
p_θ is the SUBS parameterisation: the mask logit is removed (set to -inf) before the softmax and
unmasked positions carry over, so only masked positions contribute.

Divided by the sequence length, L is an upper bound on the NLL per token of the L-token window
(up to the O(ε) prior term and the truncation of t near 0, both below 0.01 nats here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from decoding.schedules import EPS as DEFAULT_EPS
from decoding.schedules import loglinear_sigma


def sample_times(
    batch_size: int,
    generator: torch.Generator,
    t_min: float = DEFAULT_EPS,
    antithetic: bool = True,
    device: torch.device | str = "cpu",
) -> Tensor:
    """(B,) times in [t_min, 1].

    ``antithetic=True`` uses one uniform offset plus an even grid ((u + i/B) mod 1), the
    low-discrepancy sampler of MDLM/VDM: the same expectation with much less variance, which the
    1/t weight badly needs.
    """
    u = torch.rand((1,) if antithetic else (batch_size,), generator=generator)
    if antithetic:
        u = (u + torch.arange(batch_size) / batch_size) % 1.0
    return (t_min + (1.0 - t_min) * u).to(device)


def mask_tokens(
    x0: Tensor, t: Tensor, mask_id: int, generator: torch.Generator, eps: float = DEFAULT_EPS
) -> tuple[Tensor, Tensor]:
    """Forward process: mask each position independently with probability (1-ε)t.

    Args:
        x0: (B, L) long clean tokens.
        t: (B,) float times.

    Returns:
        x_t (B, L) long with ``mask_id`` at masked positions, and the (B, L) bool mask.
    """
    u = torch.rand(x0.shape, generator=generator).to(x0.device)
    masked = u < ((1.0 - eps) * t)[:, None]
    return torch.where(masked, torch.full_like(x0, mask_id), x0), masked


def subs_log_probs(logits: Tensor, mask_id: int) -> Tensor:
    """SUBS marginals from raw logits.

    Args:
        logits: (B, L, V+1) backbone output (the mask row included).
        mask_id: the mask row's index (== V: the last row).

    Returns:
        (B, L, V) float32 log p(x_0^i | x_t) over real tokens (the mask row dropped, i.e. its
        logit set to -inf, then renormalised).
    """
    if mask_id != logits.shape[-1] - 1:
        raise ValueError(f"mask_id {mask_id} must be the last logit row ({logits.shape[-1] - 1})")
    return torch.log_softmax(logits[..., :mask_id].float(), dim=-1)


def mdlm_loss(
    backbone: nn.Module,
    x0: Tensor,
    mask_id: int,
    generator: torch.Generator,
    *,
    causal: bool = False,
    time_conditioning: bool = False,
    eps: float = DEFAULT_EPS,
    t: Tensor | None = None,
    t_min: float = DEFAULT_EPS,
    antithetic: bool = True,
    reduction: str = "mean",
) -> Tensor:
    """MDLM continuous-time loss per token (an upper bound on NLL/token in expectation).

    Args:
        backbone: ``forward(x (B,L), sigma (B,), causal) -> (B, L, V+1)`` raw logits (a DDiT).
        x0: (B, L) long clean tokens (never ``mask_id``).
        mask_id: id of the mask state (== V).
        generator: CPU generator for t and the masking draws.
        causal: run the backbone with causal attention: the loss of the prefix-only marginals
            p(x_0^i | x_t^{<=i}) that DCD queries (still a valid bound, just a looser one).
        time_conditioning: feed σ(t) to the backbone; if False it gets zeros, as in MDLM, since
            the optimal masked denoiser does not depend on t given the mask pattern.
        t: (B,) times to use instead of sampling them.
        t_min, antithetic: see :func:`sample_times`.
        reduction: ``"mean"`` -> scalar mean over B·L positions; ``"none"`` -> (B, L) per
            position (zero at unmasked positions).
    """
    if t is None:
        t = sample_times(x0.shape[0], generator, t_min, antithetic, x0.device)
    xt, masked = mask_tokens(x0, t, mask_id, generator, eps)
    sigma = loglinear_sigma(t, eps) if time_conditioning else torch.zeros_like(t)
    logp = subs_log_probs(backbone(xt, sigma, causal=causal), mask_id)
    nll = -logp.gather(-1, x0[..., None]).squeeze(-1)  # (B, L)
    # 1/t = -α'_t / (1 - α_t) for the log-linear schedule; unmasked positions carry over (0).
    per_pos = torch.where(masked, nll / t[:, None], torch.zeros_like(nll))
    if reduction == "none":
        return per_pos
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return per_pos.mean()


def ar_logits(model: nn.Module, x: Tensor, bos_id: int) -> Tensor:
    """Next-token logits of a transformers causal LM for every token of x.

    Args:
        model: a causal LM returning ``.logits`` (e.g. GPT2LMHeadModel), vocabulary V.
        x: (B, L) long tokens.
        bos_id: prepended so that row 0 predicts x[:, 0] from BOS alone.

    Returns:
        (B, L, V) logits; row i predicts x[:, i] from BOS, x[:, :i].
    """
    bos = torch.full((x.shape[0], 1), bos_id, dtype=x.dtype, device=x.device)
    return model(input_ids=torch.cat([bos, x[:, :-1]], dim=1)).logits


def ar_loss(model: nn.Module, x: Tensor, bos_id: int, reduction: str = "mean") -> Tensor:
    """Plain next-token cross-entropy (nats per token) of the L tokens of x after BOS.

    Returns a scalar (``"mean"``) or the (B, L) per-token NLL (``"none"``).
    """
    logits = ar_logits(model, x, bos_id).float()
    nll = F.cross_entropy(logits.transpose(1, 2), x, reduction="none")  # (B, L)
    if reduction == "none":
        return nll
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return nll.mean()
