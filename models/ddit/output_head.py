"""The DDiT output head as normalised log-probabilities, in chunks and for chosen rows only.

The (rows, V) output is the largest tensor of a denoiser call (6.6 GB in float32 at B=32,
L=1024 with GPT-2's vocabulary). Applying ``linear`` to every row and then ``log_softmax``
holds the logits (V+1 columns), the float32 copy of bf16 logits and the result at once: about
3× the output. Here the output is allocated once; each chunk of rows is projected onto the V
real-token columns (the MASK column is never computed), written into it, and normalised there,
so a call adds one chunk's temporaries to its own output. Given a (B, L) mask of the
rows a step needs, only those rows are projected at all: the trunk still sees the whole
sequence (attention needs it), but the head costs n·H·V instead of B·L·H·V.
"""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK_ELEMENTS = 1 << 23  # output entries per chunk (32 MiB in float32)


def head_log_probs(features: Tensor, weight: Tensor, bias: Tensor | None, vocab_size: int,
                   rows: Tensor | None = None) -> Tensor:
    """log_softmax over the first ``vocab_size`` columns of ``features @ weight.T + bias``.

    Args:
        features: (B, L, H) in the weights' dtype.
        weight: (V+1, H) projection; bias: (V+1,) or None. Only the first V rows are used.
        vocab_size: V, the real tokens.
        rows: optional (B, L) bool; when given, only these rows are computed.

    Returns:
        float32 (B, L, V), or (n, V) for the n True entries of ``rows`` in row-major order.
    """
    B, L, H = features.shape
    flat = features.reshape(B * L, H) if rows is None else features[rows]
    w = weight[:vocab_size]
    b = None if bias is None else bias[:vocab_size]
    if torch.is_grad_enabled() and (w.requires_grad or flat.requires_grad):
        # Training: autograd needs out-of-place ops (and keeps the logits anyway).
        logits = flat @ w.t() if b is None else torch.addmm(b, flat, w.t())
        out = torch.log_softmax(logits.float(), dim=-1)
        return out if rows is not None else out.view(B, L, vocab_size)
    n = flat.shape[0]
    out = torch.empty(n, vocab_size, dtype=torch.float32, device=features.device)
    step = max(1, CHUNK_ELEMENTS // vocab_size)
    for start in range(0, n, step):
        part = out[start : start + step]
        f = flat[start : start + step]
        if w.dtype == torch.float32:
            if b is None:
                torch.mm(f, w.t(), out=part)
            else:
                torch.addmm(b, f, w.t(), out=part)
        else:  # a bf16/fp16 chunk, converted into the float32 output
            part.copy_(f @ w.t() if b is None else torch.addmm(b, f, w.t()))
        # log_softmax's own arithmetic (x - max - log sum), so results match the plain
        # head bit for bit; its output is one chunk, copied back in place.
        part.copy_(torch.log_softmax(part, dim=-1))
    return out if rows is not None else out.view(B, L, vocab_size)
