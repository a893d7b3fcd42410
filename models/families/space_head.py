"""The output head of a model whose real tokens are a ``TokenSpace``: only the rows asked for,
only the real columns, in chunks (the (rows, V) output is the largest tensor of a call)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..ddit.output_head import CHUNK_ELEMENTS, head_log_probs
from ..vocab import TokenSpace

__all__ = ["space_head_log_probs"]


def space_head_log_probs(features: Tensor, weight: Tensor, bias: Tensor | None,
                         space: TokenSpace, rows: Tensor | None = None,
                         ids: Tensor | None = None) -> Tensor:
    """log_softmax over the real-token columns of ``features @ weight.T + bias``.

    Args:
        features: (B, L, H) in the weights' dtype.
        weight: (rows, H), the model's full output projection; bias: (rows,) or None.
        space: the model's token space (which columns are real tokens, in engine order).
        rows: optional (B, L) bool; only these rows are computed.
        ids: ``space.ids`` already on the features' device (saves a copy per call).

    Returns:
        float32 (B, L, V) or (n, V) for the True entries of ``rows`` in row-major order. An
        identity space projects onto the first V columns only; otherwise each chunk of rows is
        projected onto every column and its real ones gathered (one chunk's temporaries).
    """
    if space.identity:
        return head_log_probs(features, weight, bias, space.size, rows)
    B, L, H = features.shape
    flat = features.reshape(B * L, H) if rows is None else features[rows]
    ids = space.ids.to(features.device) if ids is None else ids
    n, V = flat.shape[0], space.size
    out = torch.empty(n, V, dtype=torch.float32, device=features.device)
    step = max(1, CHUNK_ELEMENTS // weight.shape[0])
    for start in range(0, n, step):
        f = flat[start : start + step]
        logits = f @ weight.t() if bias is None else torch.addmm(bias, f, weight.t())
        part = out[start : start + step]
        part.copy_(logits.index_select(-1, ids))
        part.copy_(torch.log_softmax(part, dim=-1))
    return out if rows is not None else out.view(B, L, V)
