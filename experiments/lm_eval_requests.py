"""Text at the edges of the lm-eval model: encoding, batching, stop sequences, rolling
windows and the request log. Token ids only past this point (``experiments.lm_eval_model``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path


def request_key(kind: str, args: tuple) -> str:
    """A stable id of one request (its type and arguments)."""
    text = json.dumps([kind, *args], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def seed_of(*parts) -> int:
    """A 63-bit seed from any parts (stable across runs and processes)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def encode(tokenizer, text: str) -> list[int]:
    """Ids of ``text`` with no special tokens added (Duet adds BOS itself when asked)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's convention: trailing spaces of the context move to the continuation; the
    continuation's ids are those of context + continuation after the context's own."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        continuation, context = context[-spaces:] + continuation, context[:-spaces]
    whole = encode(tokenizer, context + continuation)
    ctx = encode(tokenizer, context) if context else []
    return ctx, whole[len(ctx):]


@dataclass
class GenJob:
    """One ``generate_until`` request: its prompt ids (truncated on the left to fit), the
    canvas it needs and its stop strings."""

    index: int
    args: tuple
    key: str
    prompt: list[int]
    max_gen_toks: int
    until: list[str]
    task: str | None = None
    doc_id: int | None = None
    truncated: int = 0  # prompt tokens dropped on the left
    extra: dict = field(default_factory=dict)


def batches(jobs: list[GenJob], batch_size: int, padding: str) -> list[list[GenJob]]:
    """Requests grouped into batches of at most ``batch_size``.

    ``none``: rows share the prompt length and the generation length, so every row's canvas
    is exactly its prompt + max_gen_toks. ``canvas``: rows share the generation length; prompts of
    different lengths sit together (longest first), each row generating up to the batch's
    longest prompt + max_gen_toks and read back for its first max_gen_toks tokens.
    """
    groups: dict[tuple, list[GenJob]] = {}
    for job in jobs:
        key = (job.max_gen_toks, len(job.prompt)) if padding == "none" else (job.max_gen_toks,)
        groups.setdefault(key, []).append(job)
    out = []
    for key in sorted(groups, key=lambda k: tuple(-v for v in k)):
        members = sorted(groups[key], key=lambda j: (-len(j.prompt), j.index))
        out += [members[i : i + batch_size] for i in range(0, len(members), batch_size)]
    return out


def cut(tokenizer, ids: list[int], until: list[str], eos_id: int | None) -> tuple[str, int, str]:
    """(text, tokens kept, reason) for generated ``ids``: everything from the first EOS id
    and from the first stop string on is dropped; reason is ``until``, ``eos`` or
    ``length``."""
    reason = "length"
    if eos_id is not None and eos_id in ids:
        ids, reason = ids[: ids.index(eos_id)], "eos"
    text = tokenizer.decode(ids, skip_special_tokens=False)
    hits = [text.find(s) for s in until if s and s in text]
    if not hits:
        return text, len(ids), reason
    end = min(hits)
    lo, hi = 0, len(ids)  # the fewest tokens whose text reaches the cut
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tokenizer.decode(ids[:mid], skip_special_tokens=False)) >= end:
            hi = mid
        else:
            lo = mid + 1
    return text[:end], lo, "until"


def rolling_windows(ids: list[int], max_len: int) -> list[tuple[list[int], list[int]]]:
    """(context, scored) windows covering ``ids``, each token scored once: consecutive chunks
    of ``max_len`` tokens, the last one given as much preceding context as fits (lm-eval's
    disjoint rolling windows)."""
    out = []
    for start in range(0, len(ids), max_len):
        end = min(start + max_len, len(ids))
        out.append((ids[max(0, end - max_len) : start], ids[start:end]))
    return out


class RequestLog:
    """Per-request cost lines: in memory (``lines``) and, with ``path``, appended to a JSONL
    file as each batch finishes (flushed and fsynced)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = None if path is None else Path(path)
        self.lines: list[dict] = []
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, rows: list[dict]) -> None:
        self.lines += rows
        if self.path is not None and rows:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write("".join(json.dumps(r, default=str) + "\n" for r in rows))
                f.flush()
                os.fsync(f.fileno())

    def read(self) -> list[dict]:
        """Every line: the file's when there is one (earlier, resumed work included)."""
        if self.path is None or not self.path.exists():
            return list(self.lines)
        from experiments.store import read_jsonl

        return read_jsonl(self.path)[0]
