"""The command line around Hydra: unknown keys answered with the right one, run directories
named the project's way accepted by experiments.evaluate, flat run-directory names, the
length checked from the model's config, the cached data row, provenance, and a finished
run logged to W&B on a rerun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import experiments.run as runner
from experiments.cli import check_overrides, quote_path_arg
from experiments.config import ConfigError, _dirname
from experiments.session import Session, declared_max_length

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["experiment=hmm_oracle", "num_samples=8", "batch_size=4", "steps=[1,2]"]


def compose_run(overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("run", overrides=list(overrides))


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def command(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)


@pytest.mark.parametrize("overrides,match", [
    (["strategy.mdoe=exact"], r"strategy=ancestral: unknown key 'mdoe'.*did you mean 'mode'"
                              r".*accepted keys: mode"),
    (["+strategy.mdoe=exact"], r"unknown key 'mdoe'.*did you mean 'mode'"),
    (["guide=edlm", "guide.num_candidate=3"], r"guide=edlm: .*did you mean 'num_candidates'"),
    (["guide=none,edlm", "+guide.num_candidate=3"], r"guide=none: .*'num_candidate'"),
    (["num_sampels=3"], r"unknown top-level key 'num_sampels'.*did you mean 'num_samples'"),
    (["+num_sampels=3"], r"did you mean 'num_samples'"),
    (["experiment=hmm_oracle", "oracle.lenght=4"], r"oracle=random: .*did you mean 'length'"),
    (["guide=edlmm"], r"unknown option guide=edlmm.*did you mean 'edlm'"),
])
def test_unknown_keys_get_the_right_name(overrides, match):
    with pytest.raises(ConfigError, match=match):
        check_overrides(overrides)


@pytest.mark.parametrize("overrides", [
    ["guide=edlm", "guide.num_candidates=8"], ["guide=edlm", "+guide.carry_over=true"],
    ["experiment=hmm_oracle", "oracle.length=4", "steps=[1,2]"], ["-m", "guide=none,dcd"],
    ["hydra.sweep.dir=/tmp/x", "hydra/launcher=local"], ["data=infill", "data.spans=[[0,1]]"],
])
def test_valid_overrides_pass(overrides):
    check_overrides(overrides)


def test_unknown_key_on_the_command_line_is_one_line_and_fails():
    proc = command("experiments.run", "strategy.mdoe=exact")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "did you mean 'mode'" in line and "accepted keys: mode" in line


def test_run_directory_names_stay_flat():
    name = _dirname("denoiser.name_or_path=/a/b,guide=dcd")
    assert "/" not in name and "guide=dcd" in name
    assert _dirname("") == "default"


def test_path_arguments_are_taken_verbatim():
    path = "outputs/tiny/guide=dcd,num_samples=8"
    assert quote_path_arg([path, "judge=hmm"], "run_dir") == [f"run_dir='{path}'", "judge=hmm"]
    assert quote_path_arg([f"run_dir={path}"], "run_dir") == [f"run_dir='{path}'"]
    assert quote_path_arg(["judge=hmm"], "run_dir") == ["judge=hmm"]


def test_evaluate_takes_a_run_directory_named_the_project_way(tmp_path):
    run_dir = tmp_path / "tiny" / "guide=dcd,num_samples=8,steps=[1,2]"
    runner.run(compose_run(SMALL + ["guide=dcd"]), run_dir)
    for args in ([str(run_dir)], [f"run_dir={run_dir}"]):
        proc = command("experiments.evaluate", *args, "judge=hmm")
        assert proc.returncode == 0, proc.stderr[-2000:]
        saved = lines(run_dir / "eval_hmm.jsonl")
        original = lines(run_dir / "metrics.jsonl")
        assert [x["gen_nll"] for x in saved] == pytest.approx([m["gen_nll"] for m in original])
        (run_dir / "eval_hmm.jsonl").unlink()


def test_length_is_checked_from_the_config_before_weights_load():
    assert declared_max_length(compose_run([])) == 128  # models/tiny/denoiser/config.json
    assert declared_max_length(compose_run(["experiment=hmm_oracle"])) == 6
    with pytest.raises(ConfigError, match="length 4096 exceeds the maximum 128.*from its config"):
        Session(compose_run(["length=4096"]))


def test_data_row_is_cached_with_its_key(tmp_path, monkeypatch):
    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path / "cache"))
    runner.run(compose_run(SMALL), tmp_path / "a")
    (entry,) = (tmp_path / "cache" / "reference").glob("*.json")
    saved = json.loads(entry.read_text())
    assert saved["key"]["length"] == 6 and saved["key"]["judge"]["_target_"]
    first = json.loads((tmp_path / "a" / "reference.json").read_text())
    assert first["gen_ppl"] == pytest.approx(saved["metrics"]["gen_ppl"])
    saved["metrics"]["gen_ppl"] = 123.0  # a marker: a reused row carries it
    entry.write_text(json.dumps(saved))
    runner.run(compose_run(SMALL + ["guide=dcd"]), tmp_path / "b")
    assert json.loads((tmp_path / "b" / "reference.json").read_text())["gen_ppl"] == 123.0
    runner.run(compose_run(SMALL + ["reference_samples=16"]), tmp_path / "c")  # another key
    assert json.loads((tmp_path / "c" / "reference.json").read_text())["num_samples"] == 16
    assert len(list((tmp_path / "cache" / "reference").glob("*.json"))) == 2


def test_every_result_records_its_provenance(tmp_path):
    from experiments.plot import collect

    runner.run(compose_run(SMALL), tmp_path / "run")
    import torch
    import transformers

    rows = lines(tmp_path / "run" / "metrics.jsonl") + collect(tmp_path)
    # Two metrics lines, the same two as results rows, the data row (and any baseline rows).
    assert len(rows) >= 5 and sum(r.get("method") == "data" for r in rows) == 1
    for row in rows:
        assert row["torch_version"] == torch.__version__
        assert row["transformers_version"] == transformers.__version__
        assert row["device"] == "cpu" and row["dtype"] and row["seed"] == 0
        assert row["num_samples"] in (8,) and "convention" in row and "duet_version" in row
        if (ROOT / ".git").exists():
            assert len(row["git_commit"].removesuffix("+dirty")) == 40
        assert row["gen_nll_se"] > 0


def test_finished_run_is_logged_to_wandb_on_a_rerun(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "offline")
    runner.run(compose_run(SMALL), tmp_path)
    before = (tmp_path / "samples.jsonl").read_text()
    with caplog.at_level("INFO"):
        runner.run(compose_run(SMALL + ["logger=wandb", "logger.project=duet-test"]), tmp_path)
    assert "already complete: nothing to do" in caplog.text and str(tmp_path) in caplog.text
    assert (tmp_path / "samples.jsonl").read_text() == before
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    record = b""
    for _ in range(60):  # the W&B service may still be writing its transaction log
        record = next(run.glob("*.wandb")).read_bytes()
        if b"gen_ppl" in record:
            break
        time.sleep(0.5)
    assert b"gen_ppl" in record and b"num_steps" in record


def test_flag_values_are_not_taken_for_paths():
    assert quote_path_arg(["-cn", "evaluate", "x/y=1,2"], "run_dir") == [
        "-cn", "evaluate", "run_dir='x/y=1,2'"]


def test_configs_of_ones_own_are_left_to_hydra():
    check_overrides(["-cd", "/tmp/mine", "guide=my_guide", "guide.beta=2"])
    with pytest.raises(ConfigError, match="did you mean 'mode'"):
        check_overrides(["--cfg", "job", "strategy.mdoe=exact"])


def _help(overrides: list[str]) -> str:
    """The groups and keys part of ``duet-run [overrides] --help`` (experiments.help)."""
    from experiments.help import render

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3",
                               job_name="run"):
        cfg = compose("run", overrides=overrides, return_hydra_config=True)
        return render(cfg, resolve=False)


def _sections(text: str) -> dict[str, list[str]]:
    """group -> the indented lines under its ``group: options`` line."""
    body = text.split("== Configuration groups ==")[1].split("== Other keys ==")[0]
    out, group = {}, None
    for line in body.splitlines():
        if line and not line.startswith(" ") and ": " in line and "=" not in line.split(":")[0]:
            group = line.split(":")[0]
            out[group] = []
        elif line.startswith("  ") and group:
            out[group].append(line.strip())
    return out


def test_help_shows_each_groups_keys_under_it_and_how_to_see_others():
    text = _help([])
    assert "To see another option's keys, name it" in text and "duet-run guide=" in text
    sections = _sections(text)
    assert {"denoiser", "ar", "strategy", "guide", "oracle", "experiment"} <= set(sections)
    (chosen,) = sections["guide"]
    assert chosen.startswith("guide=none (decoding.guides.independent.Independent): no keys")
    assert "duet-run guide=" in chosen and chosen.endswith("--help")
    for group, lines in sections.items():
        keys = [x for x in lines[1:] if "=" in x]
        assert all(x.startswith(f"{group}.") for x in keys), (group, keys)
    assert "oracle.num_states=3" in sections["oracle"]
    other = text.split("== Other keys ==")[1]
    assert "num_samples=16" in other and "steps=[2, 4, 8, 16, 32, 64, 128]" in other
    assert "oracle." not in other and "guide." not in other
    guide = _sections(_help(["guide=edlm"]))["guide"]
    assert guide[0] == "guide=edlm (edlm.guide.EnergyGuide):"
    assert "guide.num_candidates=4" in guide and "guide.window=[0.0, 1.0]" in guide
    assert not any("num_states" in x for x in guide)
    assert _sections(_help(["guide=speculative"]))["strategy"][0].startswith(
        "strategy=left_to_right")


def _command_in(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=240)


def test_a_refused_run_leaves_no_directory(tmp_path):
    proc = _command_in(tmp_path, "experiments.run", "steps=[0]")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line == "error: every entry of steps must be a positive integer, got 0"
    proc = _command_in(tmp_path, "experiments.evaluate", "run_dir=missing/run", "judge=hmm")
    assert proc.returncode == 2 and "no samples.jsonl in missing/run" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_refused_sweep_job_leaves_no_directory(tmp_path):
    """A sweep's jobs are checked inside each job: a refused one loses the files Hydra wrote
    for it; a job directory holding the run's own files is kept."""
    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import open_dict

    from experiments.callbacks import CheckFirst

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3",
                               job_name="run"):
        cfg = compose("run", overrides=[], return_hydra_config=True)

    def job(name: str, files: dict[str, str]):
        job_dir = tmp_path / name
        for rel, text in files.items():
            (job_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (job_dir / rel).write_text(text)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(job_dir)
        return job_dir

    hydra_files = {".hydra/config.yaml": "a", ".hydra/hydra.yaml": "b",
                   ".hydra/overrides.yaml": "c", "run.log": ""}
    refused = JobReturn(status=JobStatus.FAILED, _return_value=ConfigError("steps"))
    check = CheckFirst("run")
    for name, files, ret, kept in [
            ("bare", hydra_files, refused, False),
            ("stored", {**hydra_files, "config.yaml": "x"}, refused, True),
            ("logged", {**hydra_files, "run.log": "loading"}, refused, True),
            ("crashed", hydra_files, JobReturn(status=JobStatus.FAILED,
                                               _return_value=RuntimeError()), True)]:
        job_dir = job(name, files)
        check.on_job_end(config=cfg, job_return=ret)
        assert job_dir.exists() == kept, name
