"""Smoke test of benchmarks/frontier.py on the HMM oracle (tiny settings, a few seconds), and the
target logic of benchmarks/frontier_report.py on hand-made rows."""

import csv
import importlib
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


def test_frontier_quick_oracle(tmp_path, capsys):
    frontier = _load("frontier")
    rows = frontier.main(["--suite", "oracle", "--quick", "--steps", "1,2", "--oracle-samples",
                          "48", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert (tmp_path / "frontier.csv").exists() and (tmp_path / "frontier_oracle.png").exists()
    assert (tmp_path / "frontier.md").exists()
    with open(tmp_path / "frontier.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) == 2 + 2 * len(frontier.METHODS)
    points = [r for r in rows if r.get("strategy") in {m.strategy for m in frontier.METHODS}]
    assert {r["method"] for r in points} == {m.name for m in frontier.METHODS}
    assert all(r["num_samples"] == 48 and r["steps"] in (1, 2) for r in points)
    truth = next(r["gen_nll"] for r in rows if r["method"] == "entropy_rate")
    assert all(math.isfinite(r["gen_nll"]) and r["gen_nll"] > 0.5 * truth for r in points)
    dcd = next(r for r in points if r["method"] == "dcd/left_to_right" and r["steps"] == 2)
    assert dcd["ar_tokens"] == 5 and dcd["nfe_denoiser"] >= 2  # L AR tokens in total
    assert "targets" in printed and "gen NLL" in printed
    report = (tmp_path / "frontier.md").read_text()
    again = frontier.main(["--from-csv", str(tmp_path / "frontier.csv"), "--out", str(tmp_path)])
    assert [r["gen_nll"] for r in again] == [r["gen_nll"] for r in rows]
    assert (tmp_path / "frontier.md").read_text() == report
    other = tmp_path / "other"
    more = frontier.main(["--suite", "oracle", "--quick", "--steps", "4", "--methods",
                          "none/ancestral", "--no-plots", "--out", str(other)])
    joined = frontier.main(["--from-csv", str(tmp_path / "frontier.csv"), "--from-csv",
                            str(other / "frontier.csv"), "--out", str(other), "--no-plots"])
    assert len(joined) == len(rows) + len(more) - 2  # data and entropy_rate once
    assert [r["method"] for r in joined].count("data") == 1
    assert len(frontier.read_csv(other / "frontier.csv")) == len(joined)


def test_frontier_same_seed_same_samples(tmp_path):
    frontier = _load("frontier")
    args = ["--suite", "oracle", "--quick", "--steps", "2", "--methods", "none,dcd_is",
            "--no-plots", "--out", str(tmp_path)]
    first, second = frontier.main(args), frontier.main(args)
    key = [(r["method"], r["gen_nll"], r.get("entropy")) for r in first]
    assert key == [(r["method"], r["gen_nll"], r.get("entropy")) for r in second]
    assert {r["method"] for r in first} >= {"none/ancestral", "dcd_is4/margin"}
    assert not any(r["method"].startswith("edlm") for r in first)


def test_frontier_measures_any_conf_option(tmp_path):
    """A method named on the command line is composed from conf/ like experiments.run's."""
    frontier = _load("frontier")
    assert {(m.guide, m.strategy) for m in frontier.METHODS} <= {
        (g, s) for g in frontier.options("guide") for s in frontier.options("strategy")}
    rows = frontier.main(["--suite", "oracle", "--quick", "--steps", "2", "--no-plots",
                          "--method", "edlm16/entropy", "--method", "edlm16/entropy",
                          "--method", "edlm4/ancestral", "--methods", "edlm16",
                          "--set", "guide.carry_over=true", "--out", str(tmp_path)])
    # every --method is measured once, also one of the default list that --methods leaves out
    points = [r for r in rows if r.get("strategy")]
    assert [r["method"] for r in points] == ["edlm16/entropy", "edlm4/ancestral"]
    point = points[0]
    assert point["k"] == 16
    assert point["ess"] is not None and 1 <= point["ess"] <= 16
    suite_config = frontier.compose_run(frontier.parse_method("edlm16/entropy").overrides)
    assert suite_config.guide.num_candidates == 16 and suite_config.strategy.score == "entropy"
    with pytest.raises(SystemExit, match="no guide option 'nope'.*dcd, dcd_is, edlm"):
        frontier.parse_method("nope/ancestral")
    paper = frontier.parse_method("dcd/left_to_right:guide.context=full")
    assert paper.name == "dcd[context=full]/left_to_right"
    assert frontier.compose_run(paper.overrides).guide.context == "full"
    with pytest.raises(SystemExit, match="guide.KEY=VALUE"):
        frontier.parse_method("dcd/left_to_right:context=full")


def _row(method, steps, ppl, seconds, entropy=4.0, suite="default"):
    guide, strategy = method.split("/") if "/" in method else (method, None)
    return {"suite": suite, "method": method, "guide": guide, "strategy": strategy,
            "steps": steps, "gen_ppl": ppl, "gen_nll": math.log(ppl), "gen_nll_se": 0.01,
            "entropy": entropy, "seconds": seconds, "cpu_seconds": seconds}


def test_targets_logic():
    report = _load("frontier_report")
    rows = [_row("data", None, 70.0, None, entropy=4.17),
            _row("none/ancestral", 128, 300.0, 60.0),
            _row("edlm4/ancestral", 16, 310.0, 10.0),  # gen PPL too high
            _row("dcd/left_to_right", 32, 200.0, 10.0)]  # too many steps
    assert report.default_target(rows)["status"] == "MISS"
    rows.append(_row("dcd/ancestral", 8, 250.0, 12.0, entropy=4.1))
    result = report.default_target(rows)
    assert result["status"] == "PASS" and "dcd/ancestral at 8 steps" in result["measured"]
    rows.append(_row("dcd/margin", 4, 200.0, 5.0, entropy=3.5))  # entropy 16% low
    assert "dcd/ancestral" in report.default_target(rows)["measured"]
    oracle = [_row("entropy_rate", None, math.exp(1.0), None, suite="oracle"),
              _row("none/ancestral", 4, math.exp(1.1), 0.1, suite="oracle"),
              _row("dcd/ancestral", 4, math.exp(1.015), 0.1, suite="oracle")]
    assert report.oracle_target(oracle)["status"] == "PASS"
    oracle[-1]["gen_nll"] = 1.03
    assert report.oracle_target(oracle)["status"] == "MISS"


def test_matched_entropy_interpolates_and_ranks_at_the_data_entropy():
    report = _load("frontier_report")
    lo, hi = _row("ar/alone@T0.9", 128, 100.0, 1.0, entropy=4.0), _row("ar/alone", 128, 200.0,
                                                                        1.0, entropy=4.2)
    ppl, se = report.at_entropy([hi, lo], 4.1)
    assert ppl == pytest.approx(math.sqrt(100.0 * 200.0)) and se == pytest.approx(
        ppl * math.hypot(0.005, 0.005))
    assert report.at_entropy([lo, hi], 4.0)[0] == pytest.approx(100.0)
    assert report.at_entropy([lo, hi], 4.25) is None and report.at_entropy([hi], 4.2) is None

    def pair(name, steps, ppls, entropies=(4.0, 4.2)):
        return [_row(f"{name}@T0.9", steps, ppls[0], 1.0, entropy=entropies[0]),
                _row(name, steps, ppls[1], 1.0, entropy=entropies[1])]

    rows = [_row("data", None, 70.0, None, entropy=4.1), lo, hi,
            *pair("none/ancestral", 128, (120.0, 260.0)),
            # at T=1 this point is 30% below the guide's T=1 row, at equal entropy it is not
            *pair("dcd/left_to_right", 8, (130.0, 140.0), entropies=(4.05, 4.25))]
    for r in rows:
        r["temperature"] = 0.9 if "@T" in r["method"] else 1.0
    assert report.pair_target(rows)["measured"].startswith("best dcd/left_to_right at 8 steps")
    result = report.matched_target(rows)
    assert result["status"] == "MISS" and "(6.4% below ar/alone)" in result["measured"]
    assert "best dcd/left_to_right at 8 steps" in result["measured"]
    rows += pair("dcd/left_to_right", 4, (100.0, 110.0))  # 4.1 -> 104.9, 26% below the guide
    result = report.matched_target(rows)
    assert result["status"] == "PASS" and "at 4 steps 104.9" in result["measured"]
    lines = report.matched(rows, "default")
    assert any(line.startswith("| dcd/left_to_right |") for line in lines)
    del rows[1]  # the guide no longer brackets the data's entropy
    assert report.matched_target(rows)["status"] == "N/A"


def test_frontier_temperatures_name_their_rows(tmp_path):
    frontier = _load("frontier")
    rows = frontier.main(["--suite", "oracle", "--quick", "--steps", "2", "--methods",
                          "none/ancestral", "--temperatures", "0.5,1", "--no-plots",
                          "--out", str(tmp_path)])
    cold, warm = (next(r for r in rows if r["method"] == m)
                  for m in ("none/ancestral@T0.5", "none/ancestral"))
    assert cold["temperature"] == 0.5 and warm["temperature"] == 1.0
    assert cold["entropy"] < warm["entropy"]  # a cooled sampler repeats itself more


def test_samplers_benchmark_quick_oracle(tmp_path):
    samplers = _load("samplers")
    rows = samplers.main(["--suite", "oracle", "--quick", "--gammas", "2", "--draft-steps", "1",
                          "--mixture-weights", "0,1", "--out", str(tmp_path)])
    assert [r["method"] for r in rows] == ["ar", "spec2/1", "apd0", "apd1"]
    assert (tmp_path / "samplers.csv").exists() and (tmp_path / "samplers.md").exists()
    ar, spec, apd0, apd1 = rows
    assert ar["tokens_per_step"] == 1 and ar["nfe_ar"] == ar["length"]
    assert 1 < spec["tokens_per_step"] <= 3 and spec["nfe_ar"] < ar["nfe_ar"] + 1
    assert apd1["tokens_per_step"] == 5 and apd0["tokens_per_step"] < 5  # R = 1: M + 1 a round
