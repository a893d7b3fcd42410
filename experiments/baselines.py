"""Single-model baselines as rows of a run: the AR guide alone and the judge alone.

``baselines: [ar, judge]`` (set by the ``shakespeare_sweep`` and ``hmm_oracle`` presets) makes
``experiments.run`` also draw ``num_samples`` sequences of ``length`` tokens from each named
model on its own, left to right after its BOS with its KV cache (``start``/``extend`` of the AR
protocol), with the run's temperature and top-p, and score them with the run's judge and
conventions (``experiments.metrics``). The point of these rows: a guided sampler is worth its
second model only where it beats both models alone at the cost it spends (DCD App. F). The
judge alone is the ceiling a judge gives its own samples, not a fair competitor.

Each baseline writes one line to ``baselines.jsonl`` and its samples to
``baseline_samples.jsonl`` in the run directory; a rerun skips baselines already there.
``experiments.plot`` adds each distinct baseline once to ``results.csv`` and draws it in
``frontier.png``; the W&B logger puts its metrics in the run summary under ``<name>_alone/``.
Batch b of a baseline is seeded by (seed, name, b): the rows do not depend on the sweep job.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import torch
from torch import Tensor

from decoding.sampling import inverse_cdf, normalize_rows
from experiments.config import ConfigError
from experiments.provenance import gen_nll_se, provenance
from experiments.store import _append, batch_plan, read_jsonl

log = logging.getLogger(__name__)
NAMES = ("ar", "judge")
METRICS_FILE, SAMPLES_FILE = "baselines.jsonl", "baseline_samples.jsonl"


def check(names, prompted: bool) -> list[str]:
    """The baseline names, validated: each in ``NAMES``, at most once, unconditional runs only."""
    names = [str(n) for n in (names or [])]
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        raise ConfigError(f"baselines must be a list of {list(NAMES)}, got {unknown}")
    if len(set(names)) != len(names):
        raise ConfigError(f"baselines lists a model twice: {names}")
    if names and prompted:
        raise ConfigError("baselines sample from BOS: use them with data=unconditional")
    return names


def stored(run_dir: Path) -> list[dict]:
    """The baseline lines already in ``run_dir``."""
    return read_jsonl(Path(run_dir) / METRICS_FILE)[0]


def pending(cfg, run_dir: Path) -> list[str]:
    """Baselines the config asks for that ``run_dir`` does not hold yet."""
    names = check(cfg.get("baselines"), prompted=False)
    done = {line["baseline"] for line in stored(run_dir)}
    return [n for n in names if n not in done]


def baseline_seed(seed: int, name: str, batch: int) -> int:
    digest = hashlib.sha256(f"duet/baseline/{seed}/{name}/{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sample(lm, num: int, length: int, generator: torch.Generator, temperature: float = 1.0,
           top_p: float = 1.0) -> Tensor:
    """(num, length) long: x_i ~ p(x_i | BOS, x_<i) under ``lm``, one cached step per token.

    Args:
        lm: an ARModel (``start(B)`` -> ((B, V) log-probs, cache); ``extend(cache, (B, 1))``).
        generator: the only source of randomness (float64 inverse-CDF draws, as the engine).
    """
    if num < 1 or length < 1:
        raise ValueError(f"num and length must be >= 1, got {num} and {length}")
    logp, cache = lm.start(num)
    out = torch.empty(num, length, dtype=torch.long, device=logp.device)
    for i in range(length):
        rows = normalize_rows(logp, temperature, top_p)
        out[:, i] = inverse_cdf(rows, 1, generator, normalized=True)[0][:, 0]
        if i + 1 < length:  # the last token needs no prediction after it
            logp = lm.extend(cache, out[:, i : i + 1])[:, -1]
    return out


def _model(s, name: str):
    return s.ar if name == "ar" else s.judge


def run_baselines(s, names: list[str], run_dir: Path, logger) -> list[dict]:
    """Sample, score and record every baseline not yet in ``run_dir``; returns all lines."""
    run_dir = Path(run_dir)
    done = {line["baseline"]: line for line in stored(run_dir)}
    cfg = s.cfg
    for name in names:
        if name in done:
            continue
        lm, parts, seconds = _model(s, name), [], 0.0
        device = _device(lm)
        for b, _, size in batch_plan(int(cfg.num_samples), int(cfg.batch_size)):
            gen = torch.Generator(device).manual_seed(baseline_seed(int(cfg.seed), name, b))
            t0 = time.perf_counter()
            with torch.inference_mode():
                parts.append(sample(lm, size, int(cfg.length), gen, float(cfg.temperature),
                                    float(cfg.top_p)).cpu())
            seconds += time.perf_counter() - t0
        tokens = torch.cat(parts)
        tok = s.tokenizer
        _append(run_dir / SAMPLES_FILE, [
            {"baseline": name, "index": i, "tokens": ids,
             "text": None if tok is None else tok.decode(ids)}
            for i, ids in enumerate(tokens.tolist())])
        length, n = int(cfg.length), tokens.shape[0]
        line = {"baseline": name, "model": s.name_of(name), "guide": f"{name} alone",
                "strategy": "autoregressive", "judge": s.name_of("judge"), "name": cfg.name,
                "num_steps": length, "num_samples": n, "length": length,
                "batch_size": cfg.batch_size, "seed": cfg.seed,
                "temperature": cfg.temperature, "top_p": cfg.top_p, **s.evaluator(tokens),
                "gen_nll_se": gen_nll_se(s.evaluator, tokens),
                "nfe_denoiser": 0, "nfe_ar": length, "ar_tokens": length,
                "seconds": seconds, "samples_per_second": n / seconds if seconds > 0 else None}
        for key, value in provenance(cfg, lm, s.evaluator, n).items():
            line.setdefault(key, value)
        _append(run_dir / METRICS_FILE, [line])
        if hasattr(logger, "log_baseline"):
            logger.log_baseline(name, line)
        log.info("%s alone: gen_ppl=%.3f entropy=%.3f seconds=%.1f", name, line["gen_ppl"],
                 line["entropy"], seconds)
        done[name] = line
    return [done[n] for n in names]


def _device(model) -> torch.device:
    params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    return params[0].device if params else torch.device("cpu")
