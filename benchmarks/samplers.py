"""Speculative decoding against the AR model alone, and APD's trade-off against R.

    python benchmarks/samplers.py                        # both suites, one thread
    python benchmarks/samplers.py --suite oracle --quick # seconds (the smoke test)

For each suite (``oracle``: the frontier's HMM as denoiser, AR model and judge; ``default``:
the tiny Shakespeare models, judged by the tiny judge) it measures, side by side in one run
and from one seeded generator per point:

* ``ar``: the AR model decoding alone through the same adapter (KV cache, one forward per
  token, float64 draws);
* ``spec<γ>/<steps>``: speculative decoding, γ draft tokens per window drafted in ``steps``
  denoiser passes: tokens per AR verification (per sample), AR forwards and wall-clock of the
  batch, and quality (it must equal the AR model's up to sampling noise);
* ``apd<R>``: APD with lookahead M at mixture weight R (steps = length: no forced commits):
  tokens per step (per sample) and quality.

Quality is the judge's gen NLL per token with its standard error over samples (exact for the
oracle); ``±`` is one standard error over samples. Prints a table, writes ``samplers.csv`` and
``samplers.md`` under ``--out``. Like ``frontier.py``, it needs the project importable
(installed, or ``PYTHONPATH=.``).
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import torch
from frontier import ORACLE

from decoding import Coordinator
from decoding.guides import APDGuide, SpeculativeGuide
from decoding.sampling import inverse_cdf
from decoding.strategies import LeftToRight
from experiments.metrics import Evaluator
from experiments.provenance import gen_nll_se

ROOT = Path(__file__).resolve().parents[1]


def mean_se(values: torch.Tensor) -> tuple[float, float]:
    v = values.double()
    return float(v.mean()), float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else 0.0


def ar_alone(ar, n: int, length: int, gen: torch.Generator):
    """(n, length) tokens from the AR model, one cached forward per token -> tokens, seconds."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        pred, cache = ar.start(n)
        out = torch.empty(n, length, dtype=torch.long)
        for i in range(length):
            tok, _ = inverse_cdf(pred.to(torch.float64), 1, gen)
            out[:, i] = tok[:, 0].cpu()
            if i + 1 < length:
                pred = ar.extend(cache, tok)[:, -1]
    return out, time.perf_counter() - t0


def quality(evaluator: Evaluator, tokens: torch.Tensor) -> dict:
    q = evaluator(tokens)
    return {"gen_nll": q["gen_nll"], "gen_nll_se": gen_nll_se(evaluator, tokens),
            "gen_ppl": q["gen_ppl"], "entropy": q["entropy"]}


def measure(name, den, ar, guide, steps, evaluator, n, length, seed) -> dict:
    gen = torch.Generator().manual_seed(seed)
    if guide is None:
        tokens, seconds = ar_alone(ar, n, length, gen)
        per_round, nfe_den, nfe_ar = torch.ones(n), 0, length
    else:
        res = Coordinator(den, LeftToRight(), guide).generate(n, length, steps, generator=gen)
        tokens, seconds = res.tokens, res.seconds
        per_round = length / res.steps_per_sample
        nfe_den, nfe_ar = res.nfe["denoiser"], res.nfe["ar_forwards"]
    tps, tps_se = mean_se(per_round)
    return {"method": name, "steps": steps, "tokens_per_step": tps, "tokens_per_step_se": tps_se,
            "nfe_denoiser": nfe_den, "nfe_ar": nfe_ar, "seconds": seconds,
            **quality(evaluator, tokens)}


def suite_models(name: str, quick: bool):
    if name == "oracle":
        from models import HMM, HMMAutoregressive, HMMDenoiser

        hmm = HMM.random(*((4, 4, 5) if quick else ORACLE), seed=0, concentration=0.2)
        ar = HMMAutoregressive(hmm)
        return HMMDenoiser(hmm), ar, Evaluator(ar), hmm.length, hmm.entropy_rate()
    from models import load_ar, load_denoiser

    den = load_denoiser(ROOT / "models/tiny/denoiser")
    ar, judge = load_ar(ROOT / "models/tiny/ar"), load_ar(ROOT / "models/tiny/judge")
    tok = den.tokenizer
    return den, ar, Evaluator(judge, tok, tok.eos_token_id), (32 if quick else 128), None


def run_suite(name: str, a) -> list[dict]:
    den, ar, evaluator, length, rate = suite_models(name, a.quick)
    n = a.oracle_samples if name == "oracle" else a.num_samples
    n = min(n, 16) if a.quick else n
    lookahead = a.lookahead or (4 if name == "oracle" else 8)
    print(f"suite {name}: {n} samples x {length} tokens, {torch.get_num_threads()} thread(s)",
          flush=True)
    points = [("ar", None, length)]
    points += [(f"spec{g}/{s}", SpeculativeGuide(ar, draft_length=g), s)
               for g in a.gammas for s in a.draft_steps]
    points += [(f"apd{r:g}", APDGuide(ar, mixture_weight=r, lookahead=lookahead), length)
               for r in a.mixture_weights]
    rows = []
    for method, guide, steps in points:
        row = {"suite": name, "num_samples": n, "length": length, "lookahead": lookahead,
               **measure(method, den, ar, guide, steps, evaluator, n, length, a.seed)}
        if rate is not None:
            row["entropy_rate"] = rate
        rows.append(row)
        print(f"  {method:<12} tokens/step {row['tokens_per_step']:6.2f} ± "
              f"{row['tokens_per_step_se']:.2f}  nfe_ar {row['nfe_ar']:4d}  nfe_den "
              f"{row['nfe_denoiser']:4d}  gen_nll {row['gen_nll']:.4f} ± {row['gen_nll_se']:.4f}"
              f"  {row['seconds']:.2f} s", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| suite | method | tokens per step (AR verification) | AR forwards | denoiser "
             "forwards | wall-clock | gen NLL | gen PPL |", "|---" * 8 + "|"]
    for r in rows:
        lines.append(f"| {r['suite']} | {r['method']} | {r['tokens_per_step']:.2f} ± "
                     f"{r['tokens_per_step_se']:.2f} | {r['nfe_ar']} | {r['nfe_denoiser']} | "
                     f"{r['seconds']:.2f} s | {r['gen_nll']:.4f} ± {r['gen_nll_se']:.4f} | "
                     f"{r['gen_ppl']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", choices=["default", "oracle", "all"], default="all")
    p.add_argument("--num-samples", type=int, default=16, help="default suite, one batch")
    p.add_argument("--oracle-samples", type=int, default=2048)
    p.add_argument("--gammas", type=lambda s: [int(v) for v in s.split(",")], default=[2, 4, 8])
    p.add_argument("--draft-steps", type=lambda s: [int(v) for v in s.split(",")],
                   default=[1, 2])
    p.add_argument("--mixture-weights", type=lambda s: [float(v) for v in s.split(",")],
                   default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--lookahead", type=int, help="APD's M (default 4 oracle, 8 default)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = []
    for name in (["oracle", "default"] if a.suite == "all" else [a.suite]):
        rows += run_suite(name, a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "samplers.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    (out / "samplers.md").write_text(markdown(rows))
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
