"""The lm-eval model and the ``task=lm_eval`` front end, offline: the shipped Shakespeare tasks
(examples/lm_eval/shakespeare, data written here) with the embedded tiny models.

Metrics are recomputed by hand from the same generations and scores; stop strings must cut the
output; bad input must fail before any model loads.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval", reason='lm-eval not installed: pip install "duet-dlm[eval]"')

from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

import models  # noqa: E402
from experiments.config import ConfigError  # noqa: E402
from experiments.lm_eval_model import DuetLM  # noqa: E402
from experiments.lm_eval_requests import cut, encode, rolling_windows  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "lm_eval" / "shakespeare"
SPEAKER, CHOICE, PPL = "shakespeare_speaker", "shakespeare_next_line", "shakespeare_ppl"
FAST = dict(mc_samples=8, mc_batch_size=8)


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    """The example task folder copied, with its data files written by its own generator."""
    folder = tmp_path_factory.mktemp("tasks") / "shakespeare"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("*.jsonl", "__pycache__"))
    spec = importlib.util.spec_from_file_location("make_data", folder / "make_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write(folder, num=40)
    return folder


@pytest.fixture(scope="module")
def manager(task_dir):
    return TaskManager(include_path=str(task_dir), include_defaults=False)


@pytest.fixture
def no_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_denoiser", refuse)
    monkeypatch.setattr(models, "load_ar", refuse)


def _evaluate(lm, manager, tasks, limit=8, **kwargs):
    return simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit,
                           bootstrap_iters=0, log_samples=True, **kwargs)


SAMPLERS = {
    "ancestral": dict(overrides="guide=none strategy=ancestral", steps=8, batch_size=4),
    "dcd_l2r": dict(overrides="guide=dcd strategy=left_to_right", steps=8, batch_size=4,
                    padding="canvas"),
}


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_metrics_match_the_generations_and_scores(manager, sampler):
    lm = DuetLM(**SAMPLERS[sampler], **FAST)
    res = _evaluate(lm, manager, [SPEAKER, CHOICE])
    gen = res["samples"][SPEAKER]
    hits = [s["resps"][0][0].strip() == s["doc"]["target"].strip() for s in gen]
    assert [bool(s["exact_match"]) for s in gen] == hits
    assert res["results"][SPEAKER]["exact_match,none"] == pytest.approx(sum(hits) / len(hits))
    acc, norm = [], []
    for s in res["samples"][CHOICE]:
        ll = [r[0][0] for r in s["resps"]]
        lengths = [len(c) for c in s["doc"]["choices"]]
        acc.append(max(range(len(ll)), key=ll.__getitem__) == s["doc"]["label"])
        norm.append(max(range(len(ll)), key=lambda i: ll[i] / lengths[i]) == s["doc"]["label"])
    assert res["results"][CHOICE]["acc,none"] == pytest.approx(sum(acc) / len(acc))
    assert res["results"][CHOICE]["acc_norm,none"] == pytest.approx(sum(norm) / len(norm))
    # Each score is the logged ELBO of its request, within the logged standard error's scale.
    logged = [r for r in lm.log.lines if r["kind"] == "loglikelihood"]
    assert len(logged) == 4 * len(res["samples"][CHOICE])
    assert all(r["value"] < 0 and r["se"] >= 0 and r["forwards"] == 1 for r in logged)
    # The request log: one line per generation, with its costs; max_gen_toks is the canvas.
    lines = [r for r in lm.log.lines if r["kind"] == "generate_until"]
    assert len(lines) == len(gen) and {r["max_gen_toks"] for r in lines} == {8}
    assert all(r["tokens"] <= 8 and r["seconds"] > 0 and r["nfe_denoiser"] >= 1 for r in lines)
    assert all("\n" not in s["resps"][0][0] for s in gen)
    assert {r["text"] for r in lines} == {s["resps"][0][0] for s in gen}
    if sampler == "dcd_l2r":
        assert all(r["nfe_ar"] > 0 for r in lines)
        assert max(r["batch_size"] for r in lines) > 1  # prompts of any length, batched
        assert all(r["canvas_tokens"] >= 8 for r in lines)
    else:
        assert all(r["canvas_tokens"] == 8 and r["nfe_ar"] == 0 for r in lines)
    assert res["config"]["duet"]["guide"] == ("dcd" if sampler == "dcd_l2r" else "none")


def test_stop_strings_cut_the_output(manager):
    lm = DuetLM(**SAMPLERS["ancestral"], **FAST)
    _evaluate(lm, manager, [SPEAKER], limit=16)
    stopped = [r for r in lm.log.lines if r["stop"] == "until"]
    assert stopped, "no generation reached the stop string"
    for r in stopped:
        assert "\n" in r["raw"] and r["text"] == r["raw"].split("\n")[0]
        assert r["tokens"] < r["max_gen_toks"]


class _CharTokenizer:
    """One id per character (ids = code points); 0 is EOS."""

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(i) for i in ids)


def test_cut_counts_the_tokens_kept():
    tok, ids = _CharTokenizer(), [ord(c) for c in "ab\ncd"]
    assert cut(tok, ids, ["\n"], eos_id=0) == ("ab", 2, "until")
    assert cut(tok, ids[:2] + [0] + ids[2:], ["\n"], eos_id=0) == ("ab", 2, "eos")
    assert cut(tok, ids, ["zz"], eos_id=None) == ("ab\ncd", 5, "length")
    assert cut(tok, ids, ["c", "\n"], eos_id=None)[0] == "ab"  # the first stop string wins


def test_rolling_windows_score_each_token_once():
    ids = list(range(10))
    windows = rolling_windows(ids, 4)
    assert [c for _, c in windows] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert windows[-1][0] == [6, 7] and windows[0][0] == []


def test_rolling_loglikelihood_by_the_ar_model_by_hand(manager):
    lm = DuetLM(overrides="guide=none", steps=4, loglikelihood="ar")
    res = _evaluate(lm, manager, [PPL], limit=2)
    ar, tok = lm.session.ar, lm.session.tokenizer
    for s in res["samples"][PPL]:
        ids = encode(tok, s["doc"]["text"])
        total = 0.0
        for ctx, cont in rolling_windows(ids, ar.max_length):
            rows = ar.log_probs(torch.tensor([ctx + cont]))[0, len(ctx):].double()
            total += float(rows.gather(-1, torch.tensor(cont)[:, None]).sum())
        assert s["resps"][0][0] == pytest.approx(total, rel=1e-6)
    words = sum(len(s["doc"]["text"].split()) for s in res["samples"][PPL])
    lls = sum(s["resps"][0][0] for s in res["samples"][PPL])
    assert res["results"][PPL]["word_perplexity,none"] == pytest.approx(math.exp(-lls / words))


def test_elbo_rolling_and_scores_reused_across_step_counts(manager):
    lm = DuetLM(overrides="guide=none", steps=4, mc_samples=4, mc_batch_size=4)
    first = _evaluate(lm, manager, [PPL], limit=1)
    lm.num_steps = 8
    second = _evaluate(lm, manager, [PPL], limit=1)
    assert first["samples"][PPL][0]["resps"] == second["samples"][PPL][0]["resps"]
    rolled = [r for r in lm.log.lines if r["kind"] == "loglikelihood_rolling"]
    assert rolled[0]["forwards"] > 0 and rolled[1]["forwards"] == 0
    assert math.isfinite(first["results"][PPL]["bits_per_byte,none"])


def test_bad_input_fails_before_any_model_loads(manager, no_model_loads):
    with pytest.raises(KeyError, match="no_such_task"):  # lm-eval's own message
        _evaluate(DuetLM(steps=4), manager, ["no_such_task"])
    with pytest.raises(ConfigError, match="sampler-only"):
        _evaluate(DuetLM(steps=4, loglikelihood="none"), manager, [CHOICE], limit=2)
    with pytest.raises(ConfigError, match="needs an AR model"):
        _evaluate(DuetLM(overrides="ar=none", steps=4, loglikelihood="ar"), manager, [CHOICE],
                  limit=2)
    with pytest.raises(ConfigError, match="max_gen_toks 200 .* 128-token context"):
        _evaluate(DuetLM(steps=4, max_gen_toks=200), manager, [SPEAKER], limit=2)
    with pytest.raises(ConfigError, match="has none"):
        _evaluate(DuetLM(steps=4), manager, [SPEAKER], limit=2, apply_chat_template=True)
    with pytest.raises(ConfigError, match="steps=0|positive integer"):
        DuetLM(steps=0)
    with pytest.raises(ConfigError, match="unknown option guide=dcdd"):
        DuetLM(overrides="guide=dcdd", steps=4)
    with pytest.raises(ConfigError, match="give one step count"):
        DuetLM()  # the config's default lists seven step counts


def test_model_args_are_duet_overrides():
    from lm_eval.api.registry import get_model, model_registry

    lm = get_model("duet").create_from_arg_string(
        "guide=edlm,strategy=confidence,guide.num_candidates=2,steps=16,mc_samples=4",
        {"batch_size": 3, "device": None})
    assert lm.num_steps == 16 and lm.session.cfg.batch_size == 3
    assert lm.session.cfg.guide.num_candidates == 2
    assert lm.settings()["strategy"] == "confidence" and lm.mc["num_samples"] == 4
    assert "hf" in model_registry.keys()  # lm-eval's own models stay registered


# ----- the Hydra front end -------------------------------------------------------------------
def _front_end_cfg(task_dir, *extra):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("run", overrides=[
            "task=lm_eval", f"lm_eval.tasks=[{SPEAKER},{CHOICE}]",
            f"lm_eval.include_path={task_dir}", "lm_eval.include_defaults=false",
            "lm_eval.limit=4", "lm_eval.mc_samples=4", "lm_eval.mc_batch_size=4",
            "steps=[4,8]", "batch_size=4", *extra])


def test_front_end_writes_a_line_per_step_count_and_resumes(task_dir, tmp_path, monkeypatch):
    from experiments.plot import summarize_sweep
    from experiments.run import run

    sweep = tmp_path / "sweep"
    for guide in ("none", "dcd"):
        job = sweep / f"guide={guide}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- guide={guide}\n- task=lm_eval\n")
        lines = run(_front_end_cfg(task_dir, f"guide={guide}"), job, {"guide": guide})
        assert [x["num_steps"] for x in lines] == [4, 8]
        for x in lines:
            assert x["metric"] == f"{SPEAKER}/exact_match" and 0 <= x["accuracy"] <= 1
            assert x["accuracy_se"] is not None and x["tokens_per_second"] > 0
            assert x["forwards_per_token"] > 0 and x["guide"] == guide
            assert f"{CHOICE}/acc" in x and json.loads(x["sampler"])["num_steps"] == x["num_steps"]
        assert (job / "lm_eval_steps8.json").exists() and (job / "requests.jsonl").exists()
    # A rerun has nothing left to do: no model is loaded.
    monkeypatch.setattr(models, "load_denoiser", lambda *a, **k: pytest.fail("model loaded"))
    again = run(_front_end_cfg(task_dir, "guide=dcd"), sweep / "guide=dcd", {"guide": "dcd"})
    assert [x["num_steps"] for x in again] == [4, 8]
    rows = summarize_sweep(sweep)
    assert {r["method"] for r in rows} == {"guide=none", "guide=dcd"}
    header = (sweep / "results.csv").read_text().splitlines()[0]
    assert "accuracy" in header and "tokens_per_second" in header
    assert (sweep / "frontier.png").read_bytes()[:4] == b"\x89PNG"


def test_front_end_refuses_bad_input_before_loading(task_dir, tmp_path, no_model_loads):
    from experiments.run import run

    with pytest.raises(ConfigError, match="lm_eval.tasks: .*nope"):
        run(_front_end_cfg(task_dir, "lm_eval.tasks=[nope]"), tmp_path / "a")
    with pytest.raises(ConfigError, match="sampler-only"):
        run(_front_end_cfg(task_dir, "lm_eval.loglikelihood=none"), tmp_path / "b")
    with pytest.raises(ConfigError, match="leaves no room"):
        run(_front_end_cfg(task_dir, "lm_eval.max_gen_toks=128"), tmp_path / "c")
    with pytest.raises(ConfigError, match="chat template"):
        run(_front_end_cfg(task_dir, "lm_eval.apply_chat_template=true"), tmp_path / "d")
    assert not (tmp_path / "a").exists()


def test_generate_runs_keep_their_identity():
    from hydra import compose, initialize_config_dir

    from experiments.config import identity

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("run")
    assert "task" not in identity(cfg) and "lm_eval" not in identity(cfg)


def test_command_line_names_the_unknown_task(task_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "experiments.run", "task=lm_eval", "lm_eval.tasks=[nope]",
         f"lm_eval.include_path={task_dir}", "lm_eval.include_defaults=false",
         f"hydra.run.dir={task_dir.parent / 'cli'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode != 0
    assert "lm_eval.tasks: Spec 'nope' is not a registered" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
