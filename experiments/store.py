"""The files of one run directory, written so that nothing is lost or duplicated.

    config.yaml      resolved config (rewritten atomically on every start)
    identity.json    the config values that fix the samples (written with the first batch);
                     a rerun must match them
    batches.jsonl    one line per finished batch: its step count, index, size and costs
    samples.jsonl    one line per sample: num_steps, batch, index, token ids, text
    metrics.jsonl    one line per finished step count
    reference.json   metrics of held-out data under the same judge (the "data" row)

A batch's cost line is written and fsynced before its samples; a batch counts as done only
when its cost line and all its samples are present. On start, a torn last line (a crash
mid-write) and the samples of unfinished batches are dropped, so a rerun regenerates exactly
those batches with their own seeds and the result equals an uninterrupted run.

One process writes a run directory at a time (``experiments.lock.RunLock``, held from
``open`` to ``close``). Lines repeated by an older, unlocked writer are dropped on start, and
an append never repeats a batch or a step count already on disk.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import torch

from experiments.config import ConfigError
from experiments.lock import RunLock


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_jsonl(path: Path) -> tuple[list[dict], bool]:
    """(complete lines, whether a torn or unreadable line was skipped)."""
    if not path.exists():
        return [], False
    rows, torn = [], False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                torn = True
                break
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                torn = True
    return rows, torn


def _append(path: Path, rows: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


def batch_plan(num_samples: int, batch_size: int) -> list[tuple[int, int, int]]:
    """[(batch index, first sample index, size)] covering ``num_samples``."""
    return [(b, s, min(batch_size, num_samples - s))
            for b, s in enumerate(range(0, num_samples, batch_size))]


def _first_of(rows: list[dict], key) -> list[dict]:
    seen, out = set(), []
    for r in rows:
        k = key(r)
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


class RunStore:
    """Reads and appends the files of ``run_dir`` (only rank 0 touches them)."""

    def __init__(self, run_dir: str | Path, lock_wait: float = 60.0):
        self.dir = Path(run_dir)
        self.lock = RunLock(self.dir, wait=lock_wait)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / "metrics.jsonl"
        self.samples_path = self.dir / "samples.jsonl"
        self.batches_path = self.dir / "batches.jsonl"
        self.reference_path = self.dir / "reference.json"
        self._identity: dict | None = None  # to be written with the first batch
        self._done: set[tuple[int, int]] = set()  # (num_steps, batch) on disk
        self._finished: set[int] = set()  # step counts with a metrics line

    def open(self, identity: dict, config_yaml: str) -> None:
        """Take the lock; refuse a run directory made by a different config; write the
        config; repair. Call ``close`` when done (the lock also ends with the process)."""
        self.lock.acquire()
        try:
            self._open(identity, config_yaml)
        except BaseException:
            self.lock.release()
            raise

    def close(self) -> None:
        self.lock.release()

    def _open(self, identity: dict, config_yaml: str) -> None:
        path = self.dir / "identity.json"
        if path.exists():
            old = json.loads(path.read_text())
            if old != identity:
                diff = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
                raise ConfigError(
                    f"{self.dir} holds a run made with different settings ({', '.join(diff)}); "
                    "choose another name=... or hydra.run.dir=..., or delete that folder")
        self._identity = None if path.exists() else identity
        atomic_write(self.dir / "config.yaml", config_yaml)
        self.repair()

    def repair(self) -> None:
        """Drop torn lines, repeated lines (first copy kept) and samples of batches that did
        not finish."""
        metrics, torn_m = read_jsonl(self.metrics_path)
        kept_m = _first_of(metrics, lambda m: m["num_steps"])
        if torn_m or len(kept_m) != len(metrics):
            atomic_write(self.metrics_path, "".join(json.dumps(m) + "\n" for m in kept_m))
        batches, torn_b = read_jsonl(self.batches_path)
        samples, torn_s = read_jsonl(self.samples_path)
        stats = {}
        for b in batches:
            stats.setdefault((b["num_steps"], b["batch"]), b)
        unique_s = _first_of(samples, lambda s: (s["num_steps"], s["index"]))
        counts = defaultdict(int)
        for s in unique_s:
            counts[(s["num_steps"], s["batch"])] += 1
        done = {key for key, b in stats.items() if counts[key] == b["n"]}
        kept_s = [s for s in unique_s if (s["num_steps"], s["batch"]) in done]
        kept_b = [b for key, b in stats.items() if key in done]
        if torn_s or len(kept_s) != len(samples):
            atomic_write(self.samples_path, "".join(json.dumps(s) + "\n" for s in kept_s))
        if torn_b or len(kept_b) != len(batches):
            atomic_write(self.batches_path, "".join(json.dumps(b) + "\n" for b in kept_b))
        self._done = set(done)
        self._finished = {m["num_steps"] for m in kept_m}
        self._repair_baselines()

    def _repair_baselines(self) -> None:
        """The same for ``experiments.baselines``' files: a baseline counts once its line is
        written; samples of one without a line (the writer died while scoring) are dropped."""
        lines_path = self.dir / "baselines.jsonl"
        samples_path = self.dir / "baseline_samples.jsonl"
        lines, torn_l = read_jsonl(lines_path)
        kept_l = _first_of(lines, lambda b: b["baseline"])
        if torn_l or len(kept_l) != len(lines):
            atomic_write(lines_path, "".join(json.dumps(b) + "\n" for b in kept_l))
        if not samples_path.exists():
            return
        samples, torn_s = read_jsonl(samples_path)
        done = {b["baseline"] for b in kept_l}
        kept_s = [r for r in _first_of(samples, lambda r: (r["baseline"], r["index"]))
                  if r["baseline"] in done]
        if torn_s or len(kept_s) != len(samples):
            atomic_write(samples_path, "".join(json.dumps(r) + "\n" for r in kept_s))

    def state(self) -> dict:
        """{"finished": {num_steps: metrics line}, "batches": {num_steps: {batch: cost line}}}."""
        finished = {m["num_steps"]: m for m in read_jsonl(self.metrics_path)[0]}
        batches: dict[int, dict[int, dict]] = defaultdict(dict)
        for b in read_jsonl(self.batches_path)[0]:
            batches[b["num_steps"]][b["batch"]] = b
        return {"finished": finished, "batches": dict(batches)}

    def append_batch(self, cost: dict, rows: list[dict]) -> bool:
        """Append one finished batch unless it is already on disk; returns whether written."""
        key = (cost["num_steps"], cost["batch"])
        if key in self._done:
            return False
        if self._identity is not None:
            # Bound to the settings only once it holds samples: a run that failed before
            # generating anything may be rerun with corrected settings.
            atomic_write(self.dir / "identity.json", json.dumps(self._identity, indent=1,
                                                                sort_keys=True))
            self._identity = None
        _append(self.batches_path, [cost])
        _append(self.samples_path, rows)
        self._done.add(key)
        return True

    def append_metrics(self, line: dict) -> bool:
        """Append a step count's metrics line unless it has one; returns whether written."""
        if line["num_steps"] in self._finished:
            return False
        _append(self.metrics_path, [line])
        self._finished.add(line["num_steps"])
        return True

    def samples(self, num_steps: int | None = None) -> list[dict]:
        rows = read_jsonl(self.samples_path)[0]
        rows = [r for r in rows if num_steps is None or r["num_steps"] == num_steps]
        return sorted(rows, key=lambda r: (r["num_steps"], r["index"]))

    def tokens(self, num_steps: int) -> torch.Tensor:
        """(N, L) long samples of one step count, in sample order."""
        return torch.tensor([r["tokens"] for r in self.samples(num_steps)], dtype=torch.long)

    def reference(self) -> dict | None:
        return json.loads(self.reference_path.read_text()) if self.reference_path.exists() \
            else None

    def write_reference(self, metrics: dict) -> None:
        atomic_write(self.reference_path, json.dumps(metrics, indent=1))
