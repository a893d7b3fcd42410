"""The held-out "data" row, computed once per (judge, corpus, length, convention) and cached.

Scoring ``reference_samples`` held-out sequences costs about as much as a step count's
evaluation, and every run directory of a sweep needs the same row. The row is kept in
``$DUET_CACHE_DIR/reference/<hash>.json`` (default ``~/.cache/duet``) together with the key it
was computed for: the judge's and the corpus's resolved configs (devices dropped), the
judge's weight files (size and modification time, so retrained weights miss the cache), the
tokenizer that encodes the corpus, the length, the number of sequences, the oracle, and the
gen-PPL convention. A run copies the row
into its own ``reference.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from experiments.config import _drop_devices
from experiments.provenance import convention, gen_nll_se, provenance
from experiments.store import atomic_write

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    root = os.environ.get("DUET_CACHE_DIR") or Path.home() / ".cache" / "duet"
    return Path(root) / "reference"


def _files_of(node, field: str) -> list:
    """(name, size, mtime) of the local file or folder's files named by ``node[field]``."""
    path = node.get(field) if isinstance(node, dict) else None
    if not path or not Path(str(path)).exists():
        return []
    path = Path(str(path))
    files = [p for p in path.iterdir() if p.is_file()] if path.is_dir() else [path]
    return sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in files)


def reference_key(cfg: DictConfig, evaluator=None, held_out: int | None = None) -> dict:
    """What the data row depends on (see the module docstring)."""
    def node(name):
        value = cfg.get(name)
        if isinstance(value, DictConfig):
            return _drop_devices(OmegaConf.to_container(value, resolve=True))
        return value

    judge, corpus = node("judge"), node("corpus")
    # The held-out count matters: a corpus may draw its first rows differently for another n.
    return {"judge": judge, "judge_files": _files_of(judge, "name_or_path"), "corpus": corpus,
            "corpus_files": _files_of(corpus, "path"), "oracle": node("oracle"),
            "length": int(cfg.length), "reference_samples": int(cfg.reference_samples),
            "held_out": held_out,
            "convention": convention(cfg, evaluator)}


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def reference_row(s, judge_name: str) -> dict | None:
    """The data row of session ``s``: from the cache when its key matches, else computed
    (and cached). None when the run has no reference (``reference_samples=0``, no corpus)."""
    cfg = s.cfg
    if cfg.reference_samples == 0 or s.held_out is None:
        return None
    key = reference_key(cfg, s.evaluator, int(s.held_out.shape[0]))
    tok = s.tokenizer  # the corpus is encoded with the denoiser's tokenizer
    key["tokenizer"] = None if tok is None else [str(tok.name_or_path), len(tok)]
    path = cache_dir() / f"{key_hash(key)}.json"
    if path.exists():
        try:
            saved = json.loads(path.read_text())
            if saved.get("key") == key:
                log.info("data reference: from the cache %s", path)
                return saved["metrics"]
        except (OSError, json.JSONDecodeError, KeyError):
            pass  # an unreadable cache entry is recomputed and replaced
    data = s.held_out[: cfg.reference_samples]
    log.info("data reference: scoring %d held-out sequences with judge=%s", data.shape[0],
             judge_name)
    t0 = time.perf_counter()
    metrics = {"judge": judge_name, **s.evaluator(data),
               "gen_nll_se": gen_nll_se(s.evaluator, data),
               **provenance(cfg, s.denoiser, s.evaluator, int(data.shape[0]))}
    if s.evaluator.hmm is not None:
        metrics["entropy_rate"] = _exact_entropy_rate(s.evaluator.hmm)
    metrics["eval_seconds"] = time.perf_counter() - t0
    log.info("data reference: done in %.1f s", metrics["eval_seconds"])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({"key": key, "metrics": metrics}, indent=1, default=str))
    except OSError as err:  # a read-only cache costs time, not results
        log.warning("could not cache the data reference in %s: %s", path, err)
    return metrics


def _exact_entropy_rate(hmm) -> float | None:
    try:
        return hmm.entropy_rate()
    except ValueError:
        return None
