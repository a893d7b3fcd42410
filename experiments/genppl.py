"""Generative perplexity under a judge: the conventions by name, and windowed judge scoring.

A convention says which tokens of a sample the judge scores and in what context. Two are
offered (``CONVENTIONS``); every metrics line records which one was used:

* ``bos`` (this project's default): each sample is scored after the judge's own BOS, so its
  first token is scored too; it counts up to and including its first EOS and what follows is
  dropped. A sample longer than the judge's context is scored in sliding windows (below).
* ``mdlm`` (MDLM's and ReMDM's ``compute_generative_perplexity``, which published OpenWebText
  numbers use): no BOS, so token 0 is context only; the text is cut into consecutive chunks of
  the judge's context, each chunk's first token unscored; every non-EOS token counts, plus the
  sample's first EOS; later EOS tokens carry no weight but the text after an EOS is kept (it
  is context, and its non-EOS tokens are scored). Differences from that code: the first EOS is
  the sample's (theirs is each chunk's; the same for samples within one chunk), samples are
  not truncated at the judge's context (theirs are cut at 1024), and no padding is scored.

Both pool over the corpus: gen PPL = exp(sum of NLL / number of scored tokens). Clamped prompt
or infill tokens are never scored (they are context only): they were not generated.

Sliding windows (``windows``, the ``bos`` convention): ``z`` is what the judge reads
(``[BOS] + ids``), C its context (positions fed). The first window feeds z[0:C] and scores
z[1..C]. Each later window ends ``stride`` ids after the previous one and feeds the C ids
before its last target; it scores only the targets no earlier window did, so every target is
scored exactly once, conditioned on at least C + 1 - stride ids (on all of its prefix inside
the first window). The default stride is C // 2: at most twice the forwards of disjoint
windows, and every token sees at least half a context. A sample that fits (L <= C, BOS
included in the count as L + 1 <= C + 1 ids) is one window: exactly ``judge.log_probs``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SCORE_TOKENS = 2048  # judged positions per forward: bounds the (rows, L, V) log-prob tensor


@dataclass(frozen=True)
class Convention:
    """How a sample is turned into judged tokens (see the module docstring)."""

    name: str
    bos: bool  # score after the judge's BOS (token 0 scored) or with no BOS (token 0 context)
    stop_at_eos: bool  # drop what follows the first EOS (else keep it, later EOS unweighted)
    chunks: bool  # consecutive judge-context chunks (mdlm) instead of sliding windows


CONVENTIONS = {
    "bos": Convention("bos", bos=True, stop_at_eos=True, chunks=False),
    "mdlm": Convention("mdlm", bos=False, stop_at_eos=False, chunks=True),
}


def get_convention(name: str) -> Convention:
    if name not in CONVENTIONS:
        raise ValueError(f"unknown gen-PPL convention {name!r}; choose one of "
                         f"{', '.join(CONVENTIONS)}")
    return CONVENTIONS[name]


def windows(length: int, context: int | None, stride: int) -> list[tuple[int, int, int]]:
    """Sliding windows over a judged sequence z of ``length`` ids -> [(start, end, first)].

    A window holds z[start:end] (at most context + 1 ids: the judge is fed all but the last)
    and scores targets first..end-1, target j predicted from z[start:j]. Target 0 is never
    scored. The first window starts at 0; each later one ends ``stride`` ids after the previous
    end, so its targets see at least context + 1 - stride ids. ``context`` None: one window.
    """
    if length < 2:
        return []
    if context is None or length <= context + 1:
        return [(0, length, 1)]
    if not 1 <= stride <= context:
        raise ValueError(f"the window stride must lie in [1, {context}], got {stride}")
    span = context + 1
    out, end = [(0, span, 1)], span
    while end < length:
        new_end = min(end + stride, length)
        out.append((new_end - span, new_end, end))
        end = new_end
    return out


def chunk_windows(length: int, context: int | None) -> list[tuple[int, int, int]]:
    """MDLM's consecutive chunks of ``context`` ids, each one's first id context only."""
    size = length if context is None else context
    return [(a, min(a + size, length), a + 1) for a in range(0, length, max(size, 1))
            if min(a + size, length) - a >= 2]


@torch.inference_mode()
def target_log_probs(judge, seqs: list[list[int]], bos: bool, stride: int | None = None,
                     chunks: bool = False) -> list[torch.Tensor]:
    """Per-token judge log-probabilities, one float64 tensor per sequence (len(seq) entries).

    Entry j = log p_judge(seq[j] | its window's context), NaN where a token is not scored (token
    0 without BOS, a chunk's first token). ``stride`` defaults to half the judge's context;
    ``chunks``: MDLM's consecutive chunks instead of sliding windows. A window that starts at the
    judge's BOS goes through ``judge.log_probs``; any other through ``judge.next_log_probs``
    (no BOS), which a judge then needs.
    """
    context = getattr(judge, "max_length", None)
    has_bos = hasattr(judge, "bos_id")
    if not bos and not hasattr(judge, "next_log_probs"):
        raise ValueError(f"scoring without BOS needs a judge with next_log_probs; "
                         f"{type(judge).__name__} has none")
    step = stride or (max(1, context // 2) if context else 1)
    jobs = []  # (uses log_probs, sequence index, window start, window ids, first target, end)
    out = []
    for n, seq in enumerate(seqs):
        out.append(torch.full((len(seq),), float("nan"), dtype=torch.float64))
        # A judge without a BOS id (the HMM oracle) starts from its own start state: the
        # sequence is read as if a virtual BOS stood before it.
        z = ([judge.bos_id if has_bos else -1] if bos else []) + list(seq)
        plan = chunk_windows(len(z), context) if chunks else windows(len(z), context, step)
        for start, end, first in plan:
            jobs.append((bos and start == 0, n, start, z[start:end], first, end))
    jobs.sort(key=lambda j: (j[0], len(j[3])))  # similar lengths share a forward
    device = getattr(judge, "device", "cpu")
    off = 1 if bos else 0  # z index of seq[0]
    i = 0
    while i < len(jobs):
        rows = max(1, SCORE_TOKENS // max(len(jobs[i][3]), 1))
        group = [j for j in jobs[i : i + rows] if j[0] == jobs[i][0]]
        width = max(len(j[3]) for j in group) - 1
        from_bos = group[0][0]
        x = torch.zeros(len(group), width, dtype=torch.long)
        for r, j in enumerate(group):
            ids = j[3][1:] if from_bos else j[3][:-1]  # what the judge is fed, BOS aside
            x[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        x = x.to(device)
        # log_probs row r predicts z[r+1] after BOS; next_log_probs row r predicts z[start+r+1].
        lp = (judge.log_probs(x) if from_bos else judge.next_log_probs(x)).double().cpu()
        for r, (_, n, start, ids, first, end) in enumerate(group):
            tgt = torch.arange(first, end)
            if tgt.numel() == 0:
                continue
            tok = torch.tensor(ids, dtype=torch.long)[tgt - start]
            out[n][tgt - off] = lp[r, tgt - start - 1].gather(-1, tok[:, None]).squeeze(-1)
        i += len(group)
    return out


def judged_weights(seq: list[int], generated: list[bool], conv: Convention,
                   eos_id: int | None) -> torch.Tensor:
    """(len(seq),) bool: which tokens count under ``conv`` (the sequence as the judge sees it,
    already cut at the first EOS for ``stop_at_eos`` conventions)."""
    w = torch.tensor(generated, dtype=torch.bool) if seq else torch.zeros(0, dtype=torch.bool)
    if not conv.bos and seq:
        w[0] = False
    if eos_id is not None and not conv.stop_at_eos and eos_id in seq:
        first = seq.index(eos_id)
        later = torch.tensor([t == eos_id for t in seq])
        later[first] = False
        w &= ~later
    return w


def pooled_nll(judge, seqs: list[list[int]], generated: list[list[bool]], conv: Convention,
               eos_id: int | None, stride: int | None = None) -> tuple[list[float], list[int]]:
    """Per-sample (sum of NLL over counted tokens, number of counted tokens) under ``conv``."""
    lps = target_log_probs(judge, seqs, conv.bos, stride, conv.chunks)
    sums, counts = [], []
    for seq, gen, lp in zip(seqs, generated, lps):
        w = judged_weights(seq, gen, conv, eos_id) & ~lp.isnan()
        sums.append(float(-lp[w].sum()))
        counts.append(int(w.sum()))
    return sums, counts
