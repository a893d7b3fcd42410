"""What is generated (the ``data`` group) and the held-out sequences (the ``corpus`` group).

A task turns held-out sequences into prompts: (N, L) long rows holding the mask id where the
sampler generates and a real token where the position is clamped. Unconditional generation
clamps nothing. ``Prefix`` clamps the first fraction of each row; ``Infill`` clamps the given
spans, written as fractions of the length, as DCD's conditional runs (Liu et al. 2025) give
their prompt templates (e.g. ``[[0.1, 0.2], [0.5, 0.7]]``: tokens in those spans are known).

A corpus supplies held-out sequences: the prompts' source, and the "data" reference row of
the metrics (gen PPL and entropy of real text under the same judge).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return value


class Task:
    """Base task: ``given(length)`` says which positions are clamped."""

    needs_corpus = True

    def __init__(self, same_prompt: bool = False):
        self.same_prompt = bool(same_prompt)

    def given(self, length: int) -> Tensor:
        """(L,) bool, True at clamped positions."""
        raise NotImplementedError

    def prompts(self, sequences: Tensor | None, num_samples: int, length: int,
                mask_id: int) -> Tensor | None:
        """(N, L) long prompts built from (W, L) held-out ``sequences`` (row i uses sequence
        i mod W, or sequence 0 for every row with ``same_prompt``); None when unconditional."""
        given = self.given(length)
        if not given.any():
            return None
        if sequences is None or sequences.shape[0] == 0:
            raise ValueError(f"{type(self).__name__} needs held-out sequences for its prompts: "
                             "set a corpus (corpus=shakespeare, corpus=hmm, corpus=text_file)")
        if sequences.shape[1] != length:
            raise ValueError(f"corpus sequences have length {sequences.shape[1]}, not {length}")
        rows = torch.zeros(num_samples, dtype=torch.long)
        if not self.same_prompt:
            rows = torch.arange(num_samples) % sequences.shape[0]
        base = sequences[rows]
        return torch.where(given, base, torch.full_like(base, mask_id))


class Unconditional(Task):
    """Every position is generated."""

    needs_corpus = False

    def given(self, length: int) -> Tensor:
        return torch.zeros(length, dtype=torch.bool)


class Prefix(Task):
    """The first ``round(fraction * L)`` tokens of a held-out sequence are the prompt."""

    def __init__(self, fraction: float = 0.25, same_prompt: bool = False):
        super().__init__(same_prompt)
        self.fraction = _check_fraction("Prefix fraction", fraction)
        if self.fraction >= 1.0:
            raise ValueError("Prefix fraction must be < 1: nothing would be generated")

    def given(self, length: int) -> Tensor:
        return torch.arange(length) < round(self.fraction * length)


class Infill(Task):
    """Tokens inside ``spans`` (list of [start, end) fractions of L) are given; the rest is
    generated."""

    def __init__(self, spans=((0.25, 0.75),), same_prompt: bool = False):
        super().__init__(same_prompt)
        self.spans = []
        for span in spans:
            if len(span) != 2:
                raise ValueError(f"each infill span is [start, end], got {list(span)}")
            lo, hi = (_check_fraction("infill span bounds", v) for v in span)
            if lo >= hi:
                raise ValueError(f"infill span start must be < end, got [{lo}, {hi}]")
            self.spans.append((lo, hi))
        if not self.spans:
            raise ValueError("Infill needs at least one span")

    def given(self, length: int) -> Tensor:
        pos = torch.arange(length)
        out = torch.zeros(length, dtype=torch.bool)
        for lo, hi in self.spans:
            out |= (pos >= round(lo * length)) & (pos < round(hi * length))
        if out.all():
            raise ValueError(f"infill spans {self.spans} cover every position: nothing to generate")
        return out


class ShakespeareCorpus:
    """Held-out windows of the validation works (``training.shakespeare``), in the denoiser's
    tokenizer; deterministic (the first n windows)."""

    def __init__(self, tokenizer):
        if tokenizer is None:
            raise ValueError("corpus=shakespeare needs the denoiser's tokenizer")
        self.tokenizer = tokenizer

    def sequences(self, n: int, length: int, generator: torch.Generator | None = None) -> Tensor:
        """(min(n, W), L) long."""
        from training.shakespeare import validation_windows

        return validation_windows(self.tokenizer, length, limit=n)


class OracleCorpus:
    """Exact draws from the HMM oracle, seeded by ``seed`` (independent of the run's seed)."""

    def __init__(self, hmm, seed: int = 1234):
        self.hmm, self.seed = hmm, int(seed)

    def sequences(self, n: int, length: int, generator: torch.Generator | None = None) -> Tensor:
        if length > self.hmm.length:
            raise ValueError(f"length {length} exceeds the oracle's length {self.hmm.length}")
        g = torch.Generator().manual_seed(self.seed)
        return self.hmm.sample(n, g)[:, :length]


class TextFileCorpus:
    """Consecutive windows of a local text file, encoded with the denoiser's tokenizer."""

    def __init__(self, path: str, tokenizer):
        if tokenizer is None:
            raise ValueError("corpus=text_file needs the denoiser's tokenizer")
        self.path, self.tokenizer = Path(path), tokenizer
        if not self.path.is_file():
            raise FileNotFoundError(f"corpus text file {self.path} does not exist")

    def sequences(self, n: int, length: int, generator: torch.Generator | None = None) -> Tensor:
        ids = self.tokenizer(self.path.read_text(encoding="utf-8"),
                             add_special_tokens=False)["input_ids"]
        stream = torch.tensor(ids, dtype=torch.long)
        count = min(n, stream.numel() // length)
        if count == 0:
            raise ValueError(f"{self.path} holds {stream.numel()} tokens, fewer than {length}")
        return stream[: count * length].view(count, length)
