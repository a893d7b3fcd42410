"""experiments.run on the HMM oracle: outputs, resumption, W&B offline, re-scoring; metrics."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import experiments.run as runner
from experiments.config import ConfigError
from experiments.evaluate import evaluate
from experiments.metrics import judge_nll, to_judge_ids, trim, unigram_entropy
from experiments.store import read_jsonl
from models import HMM, HMMAutoregressive

CONF = Path(__file__).resolve().parent.parent / "conf"
SMALL = ["experiment=hmm_oracle", "num_samples=12", "batch_size=4", "steps=[1,2,3]"]


def compose_run(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("run", overrides=list(overrides))


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def sample_key(rows):
    return sorted((r["num_steps"], r["index"], tuple(r["tokens"])) for r in rows)


def test_run_writes_metrics_samples_config(tmp_path):
    cfg = compose_run(SMALL + ["guide=dcd"])
    out = runner.run(cfg, tmp_path, {"guide": "dcd", "strategy": "ancestral"})
    metrics = lines(tmp_path / "metrics.jsonl")
    assert [m["num_steps"] for m in metrics] == [1, 2, 3] and out == metrics
    for m in metrics:
        assert m["guide"] == "dcd" and m["strategy"] == "ancestral" and m["num_samples"] == 12
        for key in ("gen_ppl", "gen_nll", "entropy", "tv", "nfe_denoiser", "nfe_ar",
                    "ar_tokens", "seconds", "samples_per_second"):
            assert m[key] is not None and math.isfinite(m[key]), key
        assert m["gen_ppl"] == pytest.approx(math.exp(m["gen_nll"]))
        assert m["nfe_ar"] > 0
    samples = lines(tmp_path / "samples.jsonl")
    assert len(samples) == 36 and {"num_steps", "tokens", "text"} <= set(samples[0])
    assert all(len(r["tokens"]) == cfg.length for r in samples)
    ref = json.loads((tmp_path / "reference.json").read_text())
    assert ref["entropy_rate"] > 0 and ref["gen_ppl"] > 1
    assert "steps:" in (tmp_path / "config.yaml").read_text()


def test_resume_after_interruption_loses_and_duplicates_nothing(tmp_path, monkeypatch):
    cfg = compose_run(SMALL)
    runner.run(cfg, tmp_path / "whole")
    real, calls = runner.generate_batch, []

    def flaky(s, num_steps, batch, start, size):
        calls.append((num_steps, batch))
        if len(calls) == 5:  # steps=1 finished (3 batches), steps=2 has one batch
            raise KeyboardInterrupt
        return real(s, num_steps, batch, start, size)

    monkeypatch.setattr(runner, "generate_batch", flaky)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        runner.run(cfg, part)
    assert [m["num_steps"] for m in lines(part / "metrics.jsonl")] == [1]
    # A crash inside a later batch: its cost line and half its samples, then a torn line.
    with open(part / "batches.jsonl", "a") as f:
        f.write(json.dumps({"num_steps": 2, "batch": 1, "n": 4, "seconds": 0.0}) + "\n")
    good = lines(part / "samples.jsonl")[-1]
    with open(part / "samples.jsonl", "a") as f:
        f.write(json.dumps({**good, "batch": 1, "index": 4}) + "\n")
        f.write('{"num_steps": 2, "batch": 1, "ind')
    calls.clear()
    monkeypatch.setattr(runner, "generate_batch", lambda *a: (calls.append(a[1:3]),
                                                              real(*a))[1])
    runner.run(cfg, part)
    assert calls == [(2, 1), (2, 2), (3, 0), (3, 1), (3, 2)]  # only what was missing
    assert sample_key(lines(part / "samples.jsonl")) == sample_key(
        lines(tmp_path / "whole" / "samples.jsonl"))
    metrics = lines(part / "metrics.jsonl")
    assert [m["num_steps"] for m in metrics] == [1, 2, 3]
    whole = lines(tmp_path / "whole" / "metrics.jsonl")
    assert [m["gen_nll"] for m in metrics] == pytest.approx([m["gen_nll"] for m in whole])
    calls.clear()
    runner.run(cfg, part)  # finished: nothing is generated or appended
    assert calls == [] and len(lines(part / "metrics.jsonl")) == 3


def test_resume_refuses_a_different_config(tmp_path):
    runner.run(compose_run(SMALL), tmp_path)
    with pytest.raises(ConfigError, match="different settings.*seed"):
        runner.run(compose_run(SMALL + ["seed=1"]), tmp_path)
    runner.run(compose_run(SMALL[:-1] + ["steps=[1,2,3,4]"]), tmp_path)  # more steps: fine
    assert [m["num_steps"] for m in lines(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]


def test_a_run_that_failed_before_sampling_can_be_corrected(tmp_path):
    bad = compose_run(SMALL + ["guide=edlm", "guide.num_candidates=0"])
    with pytest.raises(ConfigError, match="num_candidates"):
        runner.run(bad, tmp_path, {"guide": "edlm"})
    assert not (tmp_path / "identity.json").exists()
    runner.run(compose_run(SMALL + ["guide=edlm"]), tmp_path)
    assert len(lines(tmp_path / "metrics.jsonl")) == 3


def test_batches_are_seeded_by_step_count_and_index(tmp_path):
    cfg = compose_run(SMALL[:-1] + ["steps=[2]"])
    runner.run(cfg, tmp_path / "a")
    runner.run(compose_run(SMALL[:-1] + ["steps=[1,2]"]), tmp_path / "b")
    a = [r for r in lines(tmp_path / "a" / "samples.jsonl")]
    b = [r for r in lines(tmp_path / "b" / "samples.jsonl") if r["num_steps"] == 2]
    assert sample_key(a) == sample_key(b)


def test_wandb_offline_run_directory(tmp_path, monkeypatch):
    pytest.importorskip("wandb")  # the `wandb` extra
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_run(SMALL[:-1] + ["steps=[1,2]", "logger=wandb", "logger.project=duet-test"])
    runner.run(cfg, tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    record = b""
    for _ in range(60):  # the W&B service may still be writing its transaction log
        record = next(runs[0].glob("*.wandb")).read_bytes()
        table = list(runs[0].rglob("samples*.table.json"))
        if b"gen_ppl" in record and table:
            break
        time.sleep(0.5)
    assert b"gen_ppl" in record and b"num_steps" in record and table
    assert (tmp_path / "metrics.jsonl").exists()


def test_evaluate_rescores_saved_samples(tmp_path):
    runner.run(compose_run(SMALL), tmp_path)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"run_dir={tmp_path}", "judge=hmm"])
    out = evaluate(cfg, {"judge": "hmm"})[str(tmp_path)]
    saved = lines(tmp_path / "eval_hmm.jsonl")
    assert out == saved and [x["num_steps"] for x in saved] == [1, 2, 3]
    original = lines(tmp_path / "metrics.jsonl")
    assert [x["gen_nll"] for x in saved] == pytest.approx([m["gen_nll"] for m in original])


def test_trim_and_entropy():
    assert trim(torch.tensor([[5, 2, 7, 2], [1, 1, 1, 1]]), 2) == [[5, 2], [1, 1, 1, 1]]
    assert unigram_entropy([[1, 1, 2, 2], [3, 3]]) == pytest.approx(math.log(2) / 2)


def test_judge_nll_is_the_exact_log_likelihood():
    hmm = HMM.random(3, 2, 5, seed=3)
    x = hmm.sample(7, torch.Generator().manual_seed(0))
    nll, count = judge_nll(HMMAutoregressive(hmm), x.tolist())
    assert count == 35 and nll == pytest.approx(float(-hmm.log_prob(x).sum()), rel=1e-5)
    short = [x[0, :3].tolist(), x[1].tolist()]
    nll2, count2 = judge_nll(HMMAutoregressive(hmm), short)
    expect = -(hmm.log_prob(x[:1, :3]).sum() + hmm.log_prob(x[1:2]).sum())
    assert count2 == 8 and nll2 == pytest.approx(float(expect), rel=1e-5)


def test_retokenize_through_text_when_judge_tokenizer_differs():
    from training.tokenizer import train_tokenizer

    text = "To be, or not to be, that is the question. " * 20
    a = train_tokenizer([text], total_ids=300)
    b = train_tokenizer([text.upper(), text], total_ids=320)
    ids = a("that is the question", add_special_tokens=False)["input_ids"] + [a.eos_token_id]
    out = to_judge_ids([ids], a, b, a.eos_token_id)[0]
    assert out[-1] == b.eos_token_id and b.decode(out[:-1]) == "that is the question"
    assert to_judge_ids([ids], a, a, a.eos_token_id) == [ids]


def test_torn_jsonl_line_is_ignored(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"a": 2')
    assert read_jsonl(path) == ([{"a": 1}], True)


TINY = Path(__file__).resolve().parent.parent / "models" / "tiny"
needs_tiny = pytest.mark.skipif(
    not all((TINY / m / "config.json").exists() for m in ("denoiser", "ar", "judge")),
    reason="the tiny Shakespeare models are not trained yet (python -m experiments.train)")


@needs_tiny
@pytest.mark.parametrize("guide", ["none", "edlm", "dcd", "dcd_is"])
def test_tiny_models_run_and_rescore(tmp_path, guide):
    cfg = compose_run([f"guide={guide}", "num_samples=2", "batch_size=2", "steps=[2]",
                       "length=16", "threads=1", "reference_samples=4"])
    (line,) = runner.run(cfg, tmp_path, {"guide": guide, "judge": "tiny"})
    assert math.isfinite(line["gen_ppl"]) and line["gen_ppl"] > 1 and line["entropy"] > 0
    assert (line["nfe_ar"] > 0) == (guide != "none")
    rows = lines(tmp_path / "samples.jsonl")
    assert len(rows) == 2 and all(isinstance(r["text"], str) for r in rows)
    ref = json.loads((tmp_path / "reference.json").read_text())
    assert ref["num_samples"] == 4 and math.isfinite(ref["gen_ppl"])
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        ecfg = compose("evaluate", overrides=[f"run_dir={tmp_path}", "judge=tiny"])
    (again,) = evaluate(ecfg, {"judge": "tiny"})[str(tmp_path)]
    assert again["gen_ppl"] == pytest.approx(line["gen_ppl"], rel=1e-4)


def test_repeated_lines_of_an_older_writer_are_dropped_on_start(tmp_path):
    cfg = compose_run(SMALL)
    runner.run(cfg, tmp_path / "whole")
    part = tmp_path / "part"
    runner.run(cfg, part)
    for name in ("samples.jsonl", "batches.jsonl", "metrics.jsonl"):  # everything twice
        text = (part / name).read_text()
        (part / name).write_text(text + text)
    with open(part / "baseline_samples.jsonl", "a") as f:  # a baseline that never finished
        f.write(json.dumps({"baseline": "judge", "index": 0, "tokens": [0], "text": None}) + "\n")
    runner.run(cfg, part)
    for name in ("samples.jsonl", "batches.jsonl", "metrics.jsonl"):
        assert len(lines(part / name)) == len(lines(tmp_path / "whole" / name)), name
    assert sample_key(lines(part / "samples.jsonl")) == sample_key(
        lines(tmp_path / "whole" / "samples.jsonl"))
    assert all(r["baseline"] != "judge" for r in lines(part / "baseline_samples.jsonl"))
