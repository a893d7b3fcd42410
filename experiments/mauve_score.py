"""MAUVE (Pillutla et al. 2021) between samples and held-out text, on the judge's features.

Features follow MAUVE's own featurisation: the judge's last-layer hidden state at a text's last
token, read after the judge's BOS, the text cut to the judge's context. The divergence
frontier itself is the ``mauve-text`` package's (k-means quantisation of both feature sets,
``pip install mauve-text`` or the ``mauve`` extra); it is optional, and asking for MAUVE
without it fails with that install line before any model runs.
"""

from __future__ import annotations

import torch
from torch import Tensor

INSTALL = "MAUVE needs the mauve-text package: pip install mauve-text (or pip install -e .[mauve])"


def require_mauve():
    """The ``mauve`` module, or ImportError saying how to install it."""
    try:
        import mauve
    except ImportError as err:
        raise ImportError(INSTALL) from err
    return mauve


@torch.inference_mode()
def judge_features(judge, seqs: list[list[int]], batch: int = 16) -> Tensor:
    """(N, H) float32: final hidden state at each sequence's last token, after BOS.

    A sequence longer than the judge's context keeps its first context - 1 tokens.
    """
    model = getattr(judge, "model", None)
    if model is None or not hasattr(judge, "bos_id"):
        raise ValueError("MAUVE needs a transformers judge (hidden states); this judge has none")
    keep = None if getattr(judge, "max_length", None) is None else judge.max_length - 1
    seqs = [list(s[:keep]) for s in seqs]
    if any(len(s) == 0 for s in seqs):
        raise ValueError("MAUVE cannot featurise an empty sequence")
    feats = []
    for i in range(0, len(seqs), batch):
        chunk = seqs[i : i + batch]
        width = max(len(s) for s in chunk) + 1
        x = torch.zeros(len(chunk), width, dtype=torch.long)
        for r, s in enumerate(chunk):
            x[r, : len(s) + 1] = torch.tensor([judge.bos_id, *s])
        # Right padding never reaches an earlier position of a causal model.
        out = model(input_ids=x.to(judge.device), output_hidden_states=True)
        last = torch.tensor([len(s) for s in chunk], device=judge.device)
        feats.append(out.hidden_states[-1][torch.arange(len(chunk)), last].float().cpu())
    return torch.cat(feats)


def mauve_score(reference: Tensor, samples: Tensor, seed: int = 25) -> float:
    """MAUVE of (N, H) sample features against (M, H) reference features, in (0, 1]."""
    mauve = require_mauve()
    res = mauve.compute_mauve(p_features=reference.double().numpy(),
                              q_features=samples.double().numpy(), seed=seed, verbose=False)
    return float(res.mauve)
