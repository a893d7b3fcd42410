"""Re-score the saved samples of a run (or of every run of a sweep) with another judge.

    python -m experiments.evaluate outputs/tiny/guide=dcd,num_samples=8 judge=tiny
    python -m experiments.evaluate run_dir=multirun/owt_sedd_medium judge=gpt2_large device=cuda

The run directory may be given bare (first argument) or as ``run_dir=PATH``; either way the
path is taken as it is, ``=`` and ``,`` included (``experiments.cli.quote_path_arg``).

Writes ``eval_<judge>.jsonl`` (one line per step count) beside each run's ``metrics.jsonl``.
Samples are re-tokenized through their text when the judge's tokenizer is not the one that
made them (``tokenizer.txt`` in the run directory names it); the EOS convention is the one
of ``experiments.metrics``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments.cli import run_cli
from experiments.config import ConfigError, build
from experiments.genppl import get_convention
from experiments.metrics import Evaluator
from experiments.paths import CONF_DIR
from experiments.store import RunStore, atomic_write

log = logging.getLogger(__name__)


def run_dirs(path: str | Path) -> list[Path]:
    """``path`` itself when it holds samples, else every run directory below it."""
    path = Path(path)
    if (path / "samples.jsonl").exists():
        return [path]
    found = sorted(p.parent for p in path.rglob("samples.jsonl"))
    if not found:
        raise ConfigError(f"no samples.jsonl in {path} or below it")
    return found


def source_tokenizer(run_dir: Path):
    """The tokenizer that made the samples (None for token-only runs such as the oracle)."""
    path = run_dir / "tokenizer.txt"
    if not path.exists():
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path.read_text().strip())


def _oracle(run_dir: Path):
    saved = OmegaConf.load(run_dir / "config.yaml")
    return build(saved.get("oracle"), "oracle")


def evaluate_run(run_dir: Path, judge, judge_name: str, convention: str = "bos") -> list[dict]:
    """Score every step count of one run; returns and writes the lines."""
    store = RunStore(run_dir)
    tok = source_tokenizer(run_dir)
    evaluator = Evaluator(judge, tok, None if tok is None else tok.eos_token_id,
                          convention=convention)
    steps = sorted({r["num_steps"] for r in store.samples()})
    lines = []
    for num_steps in steps:
        tokens = store.tokens(num_steps)
        lines.append({"judge": judge_name, "num_steps": num_steps,
                      "num_samples": int(tokens.shape[0]), **evaluator(tokens)})
        log.info("%s steps=%d gen_ppl=%.3f entropy=%.3f", run_dir.name, num_steps,
                 lines[-1]["gen_ppl"], lines[-1]["entropy"])
    atomic_write(run_dir / f"eval_{judge_name}.jsonl",
                 "".join(json.dumps(x) + "\n" for x in lines))
    return lines


def evaluate(cfg: DictConfig, choices: dict | None = None) -> dict[str, list[dict]]:
    """Re-score every run under ``cfg.run_dir`` with ``cfg.judge``."""
    convention = str(cfg.get("gen_ppl_convention", "bos"))
    get_convention(convention)  # an unknown name fails before the judge loads
    dirs = run_dirs(cfg.run_dir)
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    judge_name = (choices or {}).get("judge") or "judge"
    judge = build(cfg.judge, "judge", choices, hmm=lambda: _oracle(dirs[0]))
    return {str(d): evaluate_run(d, judge, judge_name, convention) for d in dirs}


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg, dict(HydraConfig.get().runtime.choices))


def cli(argv: list[str] | None = None) -> None:
    """The command: the run directory is read before Hydra parses the rest."""
    run_cli(main, "evaluate", argv, path_key="run_dir")


if __name__ == "__main__":
    cli()
