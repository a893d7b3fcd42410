"""Command-line runs in subprocesses: a joblib multirun ending in the sweep summary, an
interrupted sweep resumed, and a two-process torchrun (gloo) run on the HMM oracle."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import experiments.run as runner

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["experiment=hmm_oracle", "num_samples=8", "batch_size=4", "steps=[1,2]"]


def cli(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
           "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def samples(run_dir: Path) -> list[tuple]:
    rows = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    return sorted((r["num_steps"], r["index"], tuple(r["tokens"])) for r in rows)


def test_joblib_multirun_writes_results_and_frontier(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")  # the `launchers` extra
    sweep = tmp_path / "sweep"
    cli("-m", "experiments.run", "-m", *SMALL, "guide=none,dcd", "hydra/launcher=local",
        f"hydra.sweep.dir={sweep}")
    with open(sweep / "results.csv") as f:
        rows = list(csv.DictReader(f))
    methods = {r["method"] for r in rows}
    assert methods == {"guide=none", "guide=dcd", "data", "ar alone"}  # the preset's baseline
    assert sum(r["method"] == "guide=dcd" for r in rows) == 2
    assert {"gen_ppl", "entropy", "num_steps", "nfe_denoiser", "nfe_ar", "seconds"} <= set(rows[0])
    assert (sweep / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    # The sweep resumes: a job whose files were lost is redone, the finished one is kept.
    (finished,) = sweep.glob("*guide=none*")
    before = (finished / "samples.jsonl").read_text()
    (lost,) = sweep.glob("*guide=dcd*")
    (lost / "metrics.jsonl").unlink()
    cli("-m", "experiments.run", "-m", *SMALL, "guide=none,dcd", f"hydra.sweep.dir={sweep}")
    assert (finished / "samples.jsonl").read_text() == before
    assert len((lost / "metrics.jsonl").read_text().splitlines()) == 2
    assert len((lost / "samples.jsonl").read_text().splitlines()) == 16


def test_torchrun_two_processes_match_one(tmp_path):
    cli("-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
        "-m", "experiments.run", *SMALL, "batch_size=2", f"hydra.run.dir={tmp_path / 'ddp'}")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("run", overrides=SMALL + ["batch_size=2"])
    runner.run(cfg, tmp_path / "one")
    assert samples(tmp_path / "ddp") == samples(tmp_path / "one")
    assert len(samples(tmp_path / "ddp")) == 16
    metrics = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(m)["num_steps"] for m in metrics] == [1, 2]
