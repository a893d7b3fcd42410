"""Single-model baselines: exact draws from an AR model, and their rows in runs and plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import experiments.run as runner
from experiments.baselines import sample
from experiments.config import ConfigError
from experiments.plot import collect, draw
from models import HMM, HMMAutoregressive

CONF = Path(__file__).resolve().parent.parent / "conf"
SMALL = ["experiment=hmm_oracle", "num_samples=12", "batch_size=8", "steps=[1,2]"]


def compose_run(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("run", overrides=list(overrides))


def test_cached_sampling_draws_the_true_joint(gen):
    # The oracle's AR conditionals are exact, so left-to-right draws are exact draws.
    hmm = HMM.random(vocab_size=3, num_states=4, length=4, seed=3)
    n = 4000
    floor = hmm.tv_noise_floor(n)
    x = sample(HMMAutoregressive(hmm), n, hmm.length, gen)
    assert x.shape == (n, 4) and hmm.tv(x) < floor + 0.015
    # A flattened law (temperature 3) is visibly not the truth: the check can fail.
    hot = sample(HMMAutoregressive(hmm), n, hmm.length, gen, temperature=3.0)
    assert hmm.tv(hot) > floor + 0.05


def test_sampling_is_seeded_by_the_generator():
    hmm = HMM.random(vocab_size=3, num_states=4, length=4, seed=3)
    ar = HMMAutoregressive(hmm)
    a = sample(ar, 8, 4, torch.Generator().manual_seed(5))
    b = sample(ar, 8, 4, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=">= 1"):
        sample(ar, 0, 4, torch.Generator())


def test_run_writes_baseline_rows_once_and_plots_them(tmp_path):
    cfg = compose_run(SMALL)
    assert list(cfg.baselines) == ["ar"]
    for job in ("guide=none", "guide=dcd"):  # two jobs of a sweep draw the same baseline
        runner.run(compose_run(SMALL + [job]), tmp_path / job)
    line = json.loads((tmp_path / "guide=none" / "baselines.jsonl").read_text())
    assert line["baseline"] == "ar" and line["num_samples"] == 12 and line["nfe_denoiser"] == 0
    assert line["gen_ppl"] > 1 and line["tv"] is not None and line["seconds"] > 0
    samples = (tmp_path / "guide=none" / "baseline_samples.jsonl").read_text().splitlines()
    assert len(samples) == 12
    # A rerun finds every step count and the baseline done: nothing is appended.
    runner.run(compose_run(SMALL + ["guide=none"]), tmp_path / "guide=none")
    again = (tmp_path / "guide=none" / "baselines.jsonl").read_text().splitlines()
    assert len(again) == 1
    rows = collect(tmp_path)
    alone = [r for r in rows if r.get("baseline")]
    assert [r["method"] for r in alone] == ["ar alone"]
    assert alone[0]["gen_ppl"] == pytest.approx(line["gen_ppl"])
    draw(rows, tmp_path / "frontier.png")
    assert (tmp_path / "frontier.png").stat().st_size > 0


def test_bad_baselines_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="baselines"):
        runner.run(compose_run(SMALL + ["baselines=[denoiser]"]), tmp_path / "a")
    with pytest.raises(ConfigError, match="unconditional"):
        runner.run(compose_run(SMALL + ["data=infill"]), tmp_path / "b")
