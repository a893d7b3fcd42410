"""Sample quality: generative perplexity under a judge, unigram entropy, exact oracle metrics,
and MAUVE (optional).

Conventions (the field's, stated so numbers can be compared):

* **End of sequence.** A sample counts up to and including its first EOS token; what follows
  is dropped (from the judge's score and from the entropy). Without an EOS id (the HMM
  oracle) the whole sequence counts.
* **Gen PPL** = exp(sum of judge NLL / number of judged tokens), pooled over all tokens of all
  samples; each sample is scored after the judge's own BOS. When the judge's tokenizer is not
  the samples' tokenizer, each sample is decoded to text and re-encoded by the judge (the
  judge's EOS stands in for an EOS that ended the sample). A sample longer than the judge's
  context is scored in consecutive windows, each after BOS.
* **Entropy** = mean over samples of the entropy (nats) of the sample's own unigram
  distribution of token ids.
* **Oracle judge** (``models.HMMAutoregressive``): gen NLL is exact, -log p(x) / L averaged
  over samples, gen PPL = exp(gen NLL); TV to the true joint is added when the HMM can be
  enumerated and all rows share one prompt.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SCORE_TOKENS = 2048  # judged positions per forward: bounds the (rows, L, V) log-prob tensor


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


def _windows(seqs: list[list[int]], size: int | None) -> list[list[int]]:
    if size is None:
        return [s for s in seqs if s]
    return [s[i : i + size] for s in seqs for i in range(0, len(s), size) if s[i : i + size]]


@torch.inference_mode()
def judge_nll(judge, seqs: list[list[int]]) -> tuple[float, int]:
    """(sum of -log p_judge(x_i | BOS, x_<i) over every token, number of tokens)."""
    max_len = getattr(judge, "max_length", None)
    context = 1 if hasattr(judge, "bos_id") else 0  # the BOS a transformers judge prepends
    windows = _windows(seqs, None if max_len is None else max_len - context)
    windows.sort(key=len)  # similar lengths share a forward: less padding
    total, count, i = 0.0, 0, 0
    while i < len(windows):
        width = len(windows[min(len(windows) - 1, i)])
        rows = max(1, SCORE_TOKENS // max(width, 1))
        chunk = windows[i : i + rows]
        width = max(len(s) for s in chunk)
        x = torch.zeros(len(chunk), width, dtype=torch.long)
        valid = torch.zeros(len(chunk), width, dtype=torch.bool)
        for r, s in enumerate(chunk):
            x[r, : len(s)] = torch.tensor(s)
            valid[r, : len(s)] = True
        device = getattr(judge, "device", "cpu")
        lp = judge.log_probs(x.to(device)).double().cpu()
        tok_lp = lp.gather(-1, x.unsqueeze(-1)).squeeze(-1)
        total -= float(tok_lp[valid].sum())
        count += int(valid.sum())
        i += len(chunk)
    return total, count


@torch.inference_mode()
def judge_features(judge, seqs: list[list[int]], batch: int = 16) -> Tensor:
    """(N, H) final hidden state at each sequence's last token (MAUVE's text features)."""
    model = getattr(judge, "model", None)
    if model is None:
        raise ValueError("MAUVE needs a transformers judge (hidden states); this judge has none")
    feats = []
    for i in range(0, len(seqs), batch):
        chunk = seqs[i : i + batch]
        width = max(len(s) for s in chunk) + 1
        x = torch.zeros(len(chunk), width, dtype=torch.long)
        for r, s in enumerate(chunk):
            x[r, : len(s) + 1] = torch.tensor([judge.bos_id, *s])
        out = model(input_ids=x.to(judge.device), output_hidden_states=True)
        last = torch.tensor([len(s) for s in chunk], device=judge.device)
        hidden = out.hidden_states[-1]
        feats.append(hidden[torch.arange(len(chunk)), last].float().cpu())
    return torch.cat(feats)


class Evaluator:
    """Scores (N, L) samples with one judge, loaded once.

    Args:
        judge: an AR model (``decoding.protocols.ARModel``); the HMM oracle's gives exact NLL.
        source_tokenizer: the samples' tokenizer (the denoiser's), None for the oracle.
        eos_id: the samples' end-of-sequence id (None: no EOS convention).
        mauve_reference: (W, L) held-out ids; when given, MAUVE against them is computed.
    """

    def __init__(self, judge, source_tokenizer=None, eos_id: int | None = None,
                 mauve_reference: Tensor | None = None):
        self.judge, self.source_tokenizer, self.eos_id = judge, source_tokenizer, eos_id
        self.hmm = getattr(judge, "hmm", None)
        self.judge_tokenizer = getattr(judge, "tokenizer", None)
        self._mauve_ref = None
        if mauve_reference is not None:
            self._mauve_ref = judge_features(judge, self._judge_ids(trim(mauve_reference,
                                                                         eos_id)))

    def _judge_ids(self, seqs):
        if self.source_tokenizer is None or self.judge_tokenizer is None:
            return seqs
        return to_judge_ids(seqs, self.source_tokenizer, self.judge_tokenizer, self.eos_id)

    def __call__(self, tokens: Tensor, prompt: Tensor | None = None) -> dict:
        """Metrics of (N, L) long samples; ``prompt`` (N, L) the clamped rows, if any."""
        seqs = trim(tokens, self.eos_id)
        out = {"entropy": unigram_entropy(seqs),
               "mean_length": sum(map(len, seqs)) / max(len(seqs), 1)}
        if self.hmm is not None:
            out["gen_nll"] = self.hmm.gen_nll(tokens)
            out["gen_ppl"] = math.exp(out["gen_nll"])
            out["tv"] = self._tv(tokens, prompt)
        else:
            nll, count = judge_nll(self.judge, self._judge_ids(seqs))
            out["gen_nll"] = nll / max(count, 1)
            out["gen_ppl"] = math.exp(out["gen_nll"])
            out["judged_tokens"] = count
        if self._mauve_ref is not None:
            import mauve

            q = judge_features(self.judge, self._judge_ids(seqs))
            res = mauve.compute_mauve(p_features=self._mauve_ref.numpy(),
                                      q_features=q.numpy(), verbose=False)
            out["mauve"] = float(res.mauve)
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
