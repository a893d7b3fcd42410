"""Quality-vs-compute frontiers: gen PPL, entropy, wall-clock and forwards per method and steps.

    python benchmarks/frontier.py                               # both suites, ~15 min, 1 thread
    python benchmarks/frontier.py --suite oracle --quick        # seconds (the smoke test)
    python benchmarks/frontier.py --suite default --methods none/ancestral,dcd --steps 2,4,128

Suites:

* ``default``: the embedded tiny Shakespeare models (``models/tiny``): samples scored by the
  judge (gen PPL with the EOS convention of ``experiments.metrics``), held-out windows as the
  "data" row, and the single-model baselines: the small AR model and the judge each sampling L
  tokens after BOS alone (KV cache, float64 draws: ``experiments.baselines.sample``).
* ``oracle``: an HMM language (``models.HMM``) as denoiser, AR model and judge: exact gen NLL
  against the true entropy rate, and TV to the true joint.

A method is ``<guide>/<strategy>``, each an option of ``conf/guide`` and ``conf/strategy``
composed and built exactly as ``experiments.run`` does (``experiments.config.build``), so a new
option is measured without editing this script: ``--method speculative/ancestral``; settings of
that method alone follow a colon (``--method dcd/left_to_right:guide.context=full``, shown as
``dcd[context=full]/left_to_right``). ``--methods`` filters the default list (``METHODS``: guides
none, edlm<K> for K = 2, 4, 8, dcd, dcd_is4, each with ancestral, margin, remdm, and
left_to_right or chunked for dcd), every ``--method`` is measured. ``--set key=value`` applies
Hydra overrides to every method (``--set guide.beta=2``, ``--set schedule=cosine``). Every
method draws its samples from a generator seeded by (seed, steps) only, so methods share random
numbers at each step count. In the default suite the costlier methods stop at a step cap
(``frontier_methods.CAPS``; ``--all-steps`` lifts it). Writes ``frontier.csv`` (after every
point), ``frontier.md`` and ``frontier_<suite>.png`` under ``--out`` and prints a table and the
targets (``benchmarks/frontier_report.py``); ``--from-csv`` redoes that report from earlier
CSVs, measuring nothing (repeated, it joins them into one ``frontier.csv``).
``--temperatures 0.9,0.95,1`` measures everything (single-model rows included) at each
temperature: gen PPL falls steeply as entropy falls, so the report also compares methods at the
held-out data's entropy, each interpolated between its temperatures. Needs the project
installed (``pip install -e .``): the script does not edit ``sys.path``.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from frontier_methods import (  # noqa: F401
    METHODS,
    Method,
    compose_run,
    options,
    parse_method,
    parse_steps,
    parse_temperatures,
)
from frontier_report import (
    join_rows,
    print_table,
    print_targets,
    read_csv,
    write_csv,
    write_markdown,
    write_plots,
)
from omegaconf import DictConfig

from decoding import Coordinator
from experiments.baselines import baseline_seed, sample
from experiments.config import build
from experiments.metrics import Evaluator
from experiments.provenance import gen_nll_se

ROOT = Path(__file__).resolve().parents[1]
ORACLE = (4, 8, 10)  # HMM.random(V, H, L, concentration=0.2): 4**10 sequences, enumerable


@dataclass
class Suite:
    name: str
    denoiser: object
    ar: object
    evaluator: Evaluator
    length: int
    num_samples: int
    steps: list[int]
    capped: bool
    rows: list[dict] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)  # --set, applied to every method
    hmm: object = None
    configs: dict[tuple, DictConfig] = field(default_factory=dict)

    def coordinator(self, method: Method, overrides: bool = True) -> Coordinator:
        """The method's strategy, guide and schedule built from ``conf/`` with this suite's
        models handed over as ``experiments.run`` hands them (``experiments.config.build``);
        ``overrides``: apply the suite's ``--set`` overrides."""
        key = (method.name, overrides)
        if key not in self.configs:
            extra = self.overrides if overrides else []
            self.configs[key] = compose_run([*method.overrides, *extra])
        cfg = self.configs[key]
        choices = {"guide": method.guide, "strategy": method.strategy}
        objects = {"ar": self.ar, "hmm": self.hmm, "eos_id": self.evaluator.eos_id,
                   "tokenizer": getattr(self.denoiser, "tokenizer", None)}
        shared = {k: (lambda v=v: v) for k, v in objects.items()}  # build calls callables
        return Coordinator(self.denoiser, build(cfg.strategy, "strategy", choices, **shared),
                           build(cfg.guide, "guide", choices, **shared),
                           build(cfg.schedule, "schedule", choices),
                           temperature=cfg.temperature, top_p=cfg.top_p)


def point_seed(seed: int, steps: int) -> int:
    return seed * 1_000_003 + steps


def score(suite: Suite, tokens: torch.Tensor) -> dict:
    out = suite.evaluator(tokens)
    out["gen_nll_se"] = gen_nll_se(suite.evaluator, tokens)
    return out


def record(suite: Suite, out: Path, row: dict) -> None:
    row = {"suite": suite.name, "num_samples": suite.num_samples, "length": suite.length,
           "threads": torch.get_num_threads(), **row}
    if row.get("temperature") not in (None, 1.0):  # a point of its own in every table
        row["method"] = f"{row['method']}@T{row['temperature']:g}"
    suite.rows.append(row)
    write_csv(out, suite.rows)
    print(f"  [{suite.name}] {row['method']:<20} steps={row.get('steps', '')!s:<4} "
          f"gen_ppl={row.get('gen_ppl', float('nan')):9.3f} "
          f"entropy={row.get('entropy', float('nan')):.3f} "
          f"seconds={row.get('seconds', float('nan')):.2f}", flush=True)


def run_method(suite: Suite, method: Method, steps: int, seed: int) -> dict:
    coord = suite.coordinator(method)
    gen = torch.Generator().manual_seed(point_seed(seed, steps))
    cpu = time.process_time()
    res = coord.generate(suite.num_samples, suite.length, steps, generator=gen,
                         batch_size=suite.num_samples)
    cpu = time.process_time() - cpu
    ess = [r.ess for r in res.trace if r.ess is not None]
    return {"method": method.name, "guide": method.label, "strategy": method.strategy,
            "k": method.k, "steps": steps, **score(suite, res.tokens),
            "seconds": res.seconds, "cpu_seconds": cpu, "nfe_denoiser": res.nfe["denoiser"],
            "nfe_ar": res.nfe["ar_forwards"],
            "ar_tokens": res.nfe["ar_tokens"] / suite.num_samples,
            "tokens_per_step": suite.length / res.steps_used,
            "ess": sum(ess) / len(ess) if ess else None,
            "temperature": coord.temperature, "top_p": coord.top_p}


def ar_baseline(suite: Suite, name: str, lm, seed: int) -> dict:
    """L tokens after BOS from the model alone, one KV-cached step per token: the same sampler
    as ``experiments.run``'s baselines (``experiments.baselines.sample``), with the run's
    temperature and top-p (``--set temperature=...`` reaches these rows too)."""
    cfg = compose_run(suite.overrides)
    gen = torch.Generator().manual_seed(baseline_seed(seed, name, 0))
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        tokens = sample(lm, suite.num_samples, suite.length, gen, float(cfg.temperature),
                        float(cfg.top_p)).cpu()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"method": f"{name}/alone", "guide": name, "strategy": "alone",
            "steps": suite.length, **score(suite, tokens), "seconds": wall, "cpu_seconds": cpu,
            "nfe_denoiser": 0, "nfe_ar": suite.length, "ar_tokens": suite.length,
            "temperature": float(cfg.temperature), "top_p": float(cfg.top_p)}


def selected(methods: list[Method], wanted: str | None) -> list[Method]:
    if not wanted:
        return methods
    keys = set(wanted.split(","))
    return [m for m in methods if keys & {m.name, m.label, m.guide, m.strategy}]


def warm_up(suite: Suite) -> None:
    """Untimed: first calls allocate buffers and load kernels."""
    for guide in ("none", "dcd"):
        suite.coordinator(Method(guide, None, "left_to_right", None), False).generate(
            2, suite.length, 2, generator=torch.Generator().manual_seed(0))


def run_suite(suite: Suite, methods: list[Method], a, out: Path, extra=None) -> None:
    print(f"suite {suite.name}: {suite.num_samples} samples x {suite.length} tokens per point, "
          f"steps {suite.steps}, {torch.get_num_threads()} thread(s)", flush=True)
    warm_up(suite)
    for row in extra() if extra else []:  # the cheap single-model rows first
        record(suite, out, row)
    for steps in suite.steps:
        for m in methods:
            if suite.capped and not a.all_steps and m.cap is not None and steps > m.cap:
                continue
            record(suite, out, run_method(suite, m, steps, a.seed))


def run_default(a, methods: list[Method], out: Path, rows: list[dict]) -> None:
    from experiments.data import ShakespeareCorpus

    models = compose_run(a.set)  # denoiser=tiny, ar=tiny, judge=tiny unless --set says otherwise
    den, ar, judge = (build(models[g], g) for g in ("denoiser", "ar", "judge"))
    tok = den.tokenizer
    quick = a.quick
    suite = Suite("default", den, ar, Evaluator(judge, tok, tok.eos_token_id),
                  32 if quick else a.length, a.num_samples or (4 if quick else 32),
                  a.steps or ([2, 4] if quick else [2, 4, 8, 16, 32, 64, 128]), True, rows,
                  overrides=a.set)
    data = ShakespeareCorpus(tok).sequences(8 if quick else a.reference_samples, suite.length)
    record(suite, out, {"method": "data", "guide": "data", **score(suite, data),
                        "num_samples": data.shape[0]})
    want_ar = not a.methods or "ar" in a.methods.split(",")
    for s in at_temperatures(suite, a.temperatures):
        run_suite(s, methods, a, out, lambda s=s: [ar_baseline(s, name, lm, a.seed) for name, lm
                                                   in (("ar", ar), ("judge", judge)) if want_ar])


def run_oracle(a, methods: list[Method], out: Path, rows: list[dict]) -> None:
    from experiments.data import OracleCorpus
    from models import HMM, HMMAutoregressive, HMMDenoiser

    spec = (4, 4, 5) if a.quick else ORACLE  # (V, H, L); V**L <= 2e6 for the entropy rate
    hmm = HMM.random(*spec, seed=0, concentration=0.2)
    suite = Suite("oracle", HMMDenoiser(hmm), HMMAutoregressive(hmm),
                  Evaluator(HMMAutoregressive(hmm)), hmm.length,
                  a.oracle_samples or (64 if a.quick else 4096),
                  a.steps or ([1, 2] if a.quick else [1, 2, 4, 8]), False, rows,
                  overrides=a.set, hmm=hmm)
    print(f"oracle: {hmm!r}, random(concentration=0.2, seed=0)", flush=True)
    data = OracleCorpus(hmm).sequences(suite.num_samples, hmm.length)
    rate = hmm.entropy_rate()
    record(suite, out, {"method": "data", "guide": "data", **score(suite, data)})
    record(suite, out, {"method": "entropy_rate", "guide": "truth", "gen_nll": rate,
                        "gen_ppl": math.exp(rate), "num_samples": None})
    for s in at_temperatures(suite, a.temperatures):
        run_suite(s, methods, a, out)


def at_temperatures(suite: Suite, temperatures: list[float] | None) -> list[Suite]:
    """The suite once per temperature (its rows shared); None: the run's own temperature."""
    if not temperatures:
        return [suite]
    return [replace(suite, overrides=[*suite.overrides, f"temperature={t}"], configs={})
            for t in temperatures]


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", choices=["default", "oracle", "all"], default="all")
    p.add_argument("--steps", type=parse_steps,
                   help="comma list (default: 2,4,...,128 default suite; 1,2,4,8 oracle)")
    p.add_argument("--num-samples", type=int, help="per point, default suite (default 32)")
    p.add_argument("--oracle-samples", type=int, help="per point, oracle suite (default 4096)")
    p.add_argument("--methods", help="comma list of names (dcd/left_to_right), guides (edlm4, "
                   "dcd), strategies (margin); 'ar' selects the AR baselines")
    p.add_argument("--method", action="append", type=parse_method, default=[],
                   help="add a method: <guide option>[K]/<strategy option> of conf/ "
                   "(e.g. smc/ancestral, edlm16/margin); repeatable")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a Hydra override of conf/run.yaml for every method and the default "
                   "suite's models (guide.beta=2, schedule=cosine, top_p=0.9); repeatable")
    p.add_argument("--temperatures", type=parse_temperatures, metavar="T,T,...",
                   help="measure every method and single-model row at each temperature (rows "
                   "named <method>@T<t>; the report compares methods at the data's entropy)")
    p.add_argument("--length", type=int, default=128, help="default suite sequence length")
    p.add_argument("--reference-samples", type=int, default=256, help="held-out windows")
    p.add_argument("--all-steps", action="store_true", help="lift the default suite's caps")
    p.add_argument("--quick", action="store_true", help="tiny settings: a smoke test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--from-csv", action="append", metavar="CSV",
                   help="measure nothing: redo the report of a frontier.csv; repeated, the "
                   "files are joined (the first row of each method and step count is kept)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    (out := Path(a.out)).mkdir(parents=True, exist_ok=True)
    # --methods filters the default list; every --method is measured, each method once
    methods, rows = selected(METHODS, a.methods), []
    for m in a.method:
        if m.name not in {x.name for x in methods}:
            methods.append(m)
    start = time.perf_counter()
    if a.from_csv:
        rows = join_rows([read_csv(Path(path)) for path in a.from_csv])
        write_csv(out, rows)
    else:
        for name, run in (("default", run_default), ("oracle", run_oracle)):
            if a.suite in (name, "all"):
                run(a, methods, out, rows)
    if not a.no_plots:
        write_plots(out, rows)
    write_markdown(out, rows)
    print_table(rows)
    print_targets(rows)
    if not a.from_csv:
        print(f"total wall-clock {time.perf_counter() - start:.0f} s, {a.threads} thread(s); "
              f"results in {out}")
    return rows


if __name__ == "__main__":
    main()
