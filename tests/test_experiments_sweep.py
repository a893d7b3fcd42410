"""Command-line runs in subprocesses: a joblib multirun ending in the sweep summary, an
interrupted sweep resumed, a sweep whose multirun process is SIGKILLed, and a two-process
torchrun (gloo) run on the HMM oracle, on a free port."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
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
    cli("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "experiments.run", *SMALL, "batch_size=2", f"hydra.run.dir={tmp_path / 'ddp'}")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("run", overrides=SMALL + ["batch_size=2"])
    runner.run(cfg, tmp_path / "one")
    assert samples(tmp_path / "ddp") == samples(tmp_path / "one")
    assert len(samples(tmp_path / "ddp")) == 16
    metrics = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(m)["num_steps"] for m in metrics] == [1, 2]


def test_no_command_pins_a_rendezvous_port():
    """Two test runs (or two runs) at once on one machine must not collide on a port: torchrun
    is started with --standalone, whose rendezvous binds a free one."""
    pinned = re.compile(r"--master[_-]port[= ]*[1-9]|--rdzv[_-]endpoint[= ]*\S*:[1-9]"
                        r"|MASTER_PORT=[1-9]")
    files = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("tests/*.py"),
             *ROOT.glob("experiments/*.py"), *ROOT.glob("benchmarks/*.py"),
             *ROOT.glob("conf/**/*.yaml")]
    assert not [f.name for f in files if pinned.search(f.read_text())]


def _workers(pid: int) -> list[int]:
    """Processes started for the sweep ``pid`` (loky's workers are not all its children)."""
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"DUET_SWEEP_PARENT={pid}".encode() in env and int(proc.name) != pid:
            out.append(int(proc.name))
    return out


def _gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{p}").exists() and "zombie" not in _state(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def _state(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0])
    except (OSError, IndexError):
        return "zombie"


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _start_sweep(args: list[str], sweep: Path, batches: int, log: Path) -> subprocess.Popen:
    """Start a sweep in its own process group, its output to ``log`` (a pipe would stay open
    as long as any worker lives); return once a job has written ``batches`` more batches."""
    before = {p: len(_lines(p)) for p in sweep.glob("*/batches.jsonl")}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    with open(log, "w") as out:
        # A shell without job control starts background commands with SIGINT ignored, and an
        # ignored signal is inherited: give the sweep the default action a terminal gives it.
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if any(len(_lines(p)) >= before.get(p, 0) + batches
               for p in sweep.glob("*/batches.jsonl")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    return proc


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_interrupted_and_killed_sweep_resumes_without_duplicates(tmp_path):
    """Ctrl-C stops a sweep cleanly; SIGKILL of the multirun process alone, mid-way, stops
    its workers too; a rerun at once completes every run directory, and each then holds
    every line exactly once and equals an uninterrupted run."""
    sweep = tmp_path / "sweep"
    args = ["-m", "experiments.run", "-m", "experiment=hmm_oracle", "guide=none,dcd",
            "num_samples=40", "batch_size=2", "steps=[1,2,4]", "hydra/launcher=local",
            f"hydra.sweep.dir={sweep}"]
    proc = _start_sweep(args, sweep, 2, tmp_path / "ctrl-c.log")
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    proc.wait(timeout=60)
    out = (tmp_path / "ctrl-c.log").read_text()
    assert proc.returncode == 130, out[-2000:]
    assert "Traceback" not in out and "leaked" not in out and "interrupted" in out, out[-2000:]
    assert "[none/ancestral #0]" in out or "[dcd/ancestral #1]" in out  # jobs' log prefixes
    parent = _start_sweep(args, sweep, 6, tmp_path / "killed.log")
    workers = _workers(parent.pid)
    assert workers
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    cli(*args)  # at once: an orphan still holding a run directory's lock is waited for
    assert _gone(workers, 10), "a worker outlived the multirun process"
    runs = sorted(p.parent for p in sweep.glob("*/metrics.jsonl"))
    assert len(runs) == 2
    for run_dir in runs:
        guide = "dcd" if "guide=dcd" in run_dir.name else "none"
        whole = tmp_path / f"whole_{guide}"
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("run", overrides=args[3:4] + [f"guide={guide}"] + args[5:8])
        runner.run(cfg, whole)
        for name, key in (("samples.jsonl", ("num_steps", "index")),
                          ("batches.jsonl", ("num_steps", "batch")),
                          ("metrics.jsonl", ("num_steps",)),
                          ("baselines.jsonl", ("baseline",)),
                          ("baseline_samples.jsonl", ("baseline", "index"))):
            got = [json.loads(x) for x in _lines(run_dir / name)]
            keys = [tuple(r[k] for k in key) for r in got]
            assert len(keys) == len(set(keys)), f"{run_dir.name}/{name} repeats a line"
            want = [json.loads(x) for x in _lines(whole / name)]
            assert sorted(keys) == sorted(tuple(r[k] for k in key) for r in want), name
        assert samples(run_dir) == samples(whole)
        got = {m["num_steps"]: m for m in map(json.loads, _lines(run_dir / "metrics.jsonl"))}
        for m in map(json.loads, _lines(whole / "metrics.jsonl")):
            assert got[m["num_steps"]]["gen_nll"] == pytest.approx(m["gen_nll"])
            assert got[m["num_steps"]]["tv"] == pytest.approx(m["tv"])
    with open(sweep / "results.csv") as f:
        rows = [(r["method"], r["num_steps"]) for r in csv.DictReader(f)]
    assert len(rows) == len(set(rows))
    assert sum(method.startswith("guide=") for method, _ in rows) == 2 * 3
