"""Sample quality: generative perplexity under a judge, unigram entropy, exact oracle metrics,
and MAUVE (optional).

Conventions (stated so numbers can be compared):

* **Gen PPL** follows a named convention (``experiments.genppl.CONVENTIONS``): ``bos`` (the
  default: after the judge's BOS, up to and including the first EOS) or ``mdlm`` (MDLM/ReMDM:
  no BOS, judge-context chunks, text after EOS kept, later EOS unweighted). Pooled over all
  judged tokens of all samples; clamped prompt/infill tokens are context, never scored. When
  the judge's tokenizer is not the samples', samples are decoded to text and re-encoded by
  the judge (EOS ids map to the judge's EOS; clamped and generated runs are re-encoded
  separately so that each judge token is one or the other).
* **Entropy** = mean over samples of the entropy (nats) of the unigram distribution of the
  sample's generated token ids (cut after the first EOS under ``bos``).
* **Oracle judge** (``models.HMMAutoregressive``): gen NLL is exact, -log p(x) / L averaged
  over samples, gen PPL = exp(gen NLL) (convention ``exact``); TV to the true joint is added
  when the HMM can be enumerated and all rows share one prompt.
* **MAUVE** (``experiments.mauve_score``): judge features of samples against held-out text.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from experiments.genppl import CONVENTIONS, get_convention, pooled_nll
from experiments.mauve_score import judge_features, mauve_score


def trim(tokens: Tensor, eos_id: int | None) -> list[list[int]]:
    """(N, L) ids -> N lists, each cut after its first ``eos_id`` (kept)."""
    out = []
    for row in tokens.tolist():
        if eos_id is not None and eos_id in row:
            row = row[: row.index(eos_id) + 1]
        out.append(row)
    return out


def unigram_entropy(seqs: list[list[int]]) -> float:
    """Mean per-sequence entropy (nats) of the empirical distribution of its token ids."""
    values = []
    for seq in seqs:
        if not seq:
            continue
        counts = torch.bincount(torch.tensor(seq)).double()
        p = counts[counts > 0] / len(seq)
        values.append(float(-(p * p.log()).sum()))
    return sum(values) / len(values) if values else float("nan")


def same_tokenizer(a, b) -> bool:
    """True when both map every token string to the same id. With a tokenizer missing there
    is no text to go through: the ids are taken as shared (the judge checks their range)."""
    if a is None or b is None:
        return True
    return a is b or (len(a) == len(b) and a.get_vocab() == b.get_vocab())


def to_judge_ids(seqs: list[list[int]], source_tok, judge_tok, eos_id: int | None
                 ) -> list[list[int]]:
    """Re-tokenize through text when the judge's tokenizer differs from the samples'."""
    if same_tokenizer(source_tok, judge_tok):
        return seqs
    judge_eos = judge_tok.eos_token_id
    out = []
    for seq in seqs:
        ended = eos_id is not None and seq and seq[-1] == eos_id
        text = source_tok.decode(seq[:-1] if ended else seq, skip_special_tokens=True)
        ids = list(judge_tok(text, add_special_tokens=False)["input_ids"])
        if ended and judge_eos is not None:
            ids.append(judge_eos)
        out.append(ids)
    return out


def judge_nll(judge, seqs: list[list[int]]) -> tuple[float, int]:
    """(sum of -log p_judge(x_i | BOS, x_<i) over every token, number of tokens): the ``bos``
    convention on whole sequences (sliding windows past the judge's context)."""
    sums, counts = pooled_nll(judge, seqs, [[True] * len(s) for s in seqs], CONVENTIONS["bos"],
                              None)
    return sum(sums), sum(counts)


def to_judge_pieces(seq: list[int], generated: list[bool], source_tok, judge_tok,
                    eos_id: int | None) -> tuple[list[int], list[bool]]:
    """One sample's judge ids and which of them were generated, re-encoding through text.

    The sample is cut into runs of clamped or generated tokens, and at every EOS (which maps to
    the judge's EOS); each run is decoded and re-encoded on its own.
    """
    if same_tokenizer(source_tok, judge_tok):
        return list(seq), list(generated)
    ids, flags, run, run_flag = [], [], [], None

    def close():
        if run:
            text = source_tok.decode(run, skip_special_tokens=True)
            new = list(judge_tok(text, add_special_tokens=False)["input_ids"])
            ids.extend(new)
            flags.extend([run_flag] * len(new))
            run.clear()

    for tok, flag in zip(seq, generated):
        if eos_id is not None and tok == eos_id:
            close()
            if judge_tok.eos_token_id is not None:
                ids.append(judge_tok.eos_token_id)
                flags.append(flag)
            continue
        if flag != run_flag:
            close()
            run_flag = flag
        run.append(tok)
    close()
    return ids, flags


class Evaluator:
    """Scores (N, L) samples with one judge, loaded once.

    Args:
        judge: an AR model (``decoding.protocols.ARModel``); the HMM oracle's gives exact NLL.
        source_tokenizer: the samples' tokenizer (the denoiser's), None for the oracle.
        eos_id: the samples' end-of-sequence id (None: no EOS convention).
        mauve_reference: (W, L) held-out ids; when given, MAUVE against them is computed.
        convention: the gen-PPL convention's name (``experiments.genppl.CONVENTIONS``).
        stride: sliding-window stride past the judge's context (default: half of it).
        mauve_features: ``last`` (MAUVE's) or ``mean`` (see ``experiments.mauve_score``).
    """

    def __init__(self, judge, source_tokenizer=None, eos_id: int | None = None,
                 mauve_reference: Tensor | None = None, convention: str = "bos",
                 stride: int | None = None, mauve_features: str = "last"):
        self.rule = get_convention(convention)
        self.judge, self.source_tokenizer, self.eos_id = judge, source_tokenizer, eos_id
        self.stride, self.mauve_features = stride, mauve_features
        self.hmm = getattr(judge, "hmm", None)
        # The name recorded in metrics lines; the oracle judge's NLL is exact, not a convention.
        self.convention = "exact" if self.hmm is not None else self.rule.name
        self.judge_tokenizer = getattr(judge, "tokenizer", None)
        self._mauve_ref = None
        if mauve_reference is not None:
            ref = self._judge_ids(trim(mauve_reference, eos_id))
            self._mauve_ref = judge_features(judge, ref, pool=mauve_features)

    def _judge_ids(self, seqs):
        if self.source_tokenizer is None or self.judge_tokenizer is None:
            return seqs
        return to_judge_ids(seqs, self.source_tokenizer, self.judge_tokenizer, self.eos_id)

    def samples(self, tokens: Tensor, prompt: Tensor | None = None
                ) -> tuple[list[list[int]], list[list[bool]]]:
        """The samples as the convention reads them, and which tokens were generated."""
        gen = torch.ones_like(tokens, dtype=torch.bool) if prompt is None else \
            (torch.as_tensor(prompt).to(tokens.device).expand_as(tokens) != tokens)
        seqs = trim(tokens, self.eos_id if self.rule.stop_at_eos else None)
        return seqs, [g[: len(s)] for s, g in zip(seqs, gen.tolist())]

    def nll(self, tokens: Tensor, prompt: Tensor | None = None) -> tuple[list[float], list[int]]:
        """Per-sample (judge NLL sum, judged tokens) under the convention."""
        pieces = [to_judge_pieces(s, g, self.source_tokenizer, self.judge_tokenizer, self.eos_id)
                  for s, g in zip(*self.samples(tokens, prompt))]
        judge_eos = getattr(self.judge_tokenizer, "eos_token_id", None) \
            if self.judge_tokenizer is not None else self.eos_id
        return pooled_nll(self.judge, [p[0] for p in pieces], [p[1] for p in pieces],
                          self.rule, judge_eos, self.stride)

    def __call__(self, tokens: Tensor, prompt: Tensor | None = None) -> dict:
        """Metrics of (N, L) long samples; ``prompt`` (N, L) the clamped rows, if any (mask id
        where generated)."""
        seqs, gen = self.samples(tokens, prompt)
        out = {"entropy": unigram_entropy([[t for t, g in zip(s, f) if g]
                                           for s, f in zip(seqs, gen)]),
               "mean_length": sum(map(len, seqs)) / max(len(seqs), 1),
               "convention": self.convention}
        if self.hmm is not None:
            out["gen_nll"] = self.hmm.gen_nll(tokens)
            out["gen_ppl"] = math.exp(out["gen_nll"])
            out["tv"] = self._tv(tokens, prompt)
        else:
            sums, counts = self.nll(tokens, prompt)
            count = sum(counts)
            out["gen_nll"] = sum(sums) / max(count, 1)
            out["gen_ppl"] = math.exp(out["gen_nll"])
            out["judged_tokens"] = count
        if self._mauve_ref is not None:
            q = judge_features(self.judge, self._judge_ids(trim(tokens, self.eos_id)),
                               pool=self.mauve_features)
            out["mauve"] = mauve_score(self._mauve_ref, q)
        return out
    def _tv(self, tokens: Tensor, prompt: Tensor | None) -> float | None:
        if tokens.shape[1] != self.hmm.length:
            return None
        shared = None
        if prompt is not None:
            if not (prompt == prompt[:1]).all():
                return None  # one conditional law per distinct prompt: no single TV
            shared = prompt[0]
        try:
            return self.hmm.tv(tokens, shared)
        except ValueError:  # too many sequences to enumerate
            return None
