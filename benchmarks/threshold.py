"""Threshold decoding (Wu et al. 2025, Fast-dLLM) against fixed two-per-step confidence decoding.

    python benchmarks/threshold.py                 # the embedded tiny models, ~8 min, 1 thread
    python benchmarks/threshold.py --quick         # seconds (the smoke test)
    python benchmarks/threshold.py --thresholds 0.5,0.9 --blocks 128,16 --num-samples 32

On the default models of ``conf/run.yaml`` (the tiny Shakespeare denoiser, scored by the tiny
judge as ``experiments.run`` scores them), for each block length of ``--blocks`` (the sequence
length itself: one block, no ``Blocks``), every method draws ``--num-samples`` unconditional
samples of ``--length`` tokens in one batch from the same seed:

* ``confidence/2``: ``strategy=confidence`` (top-k by q(draft), MaskGIT / LLaDA
  ``low_confidence``) with steps = length / 2, i.e. two tokens per step (inside ``Blocks``
  when the block is shorter than the sequence: two per step in each block);
* ``threshold@τ`` for each τ of ``--thresholds``: ``strategy=threshold`` (inside ``Blocks``
  likewise) with steps = length as the cap, which one token per step never exceeds.

Both are built from ``conf/`` with Hydra overrides (``benchmarks/frontier_methods.compose_run``
and ``experiments.config.build``), at the run's temperature (1: sampled drafts). Printed per
row: denoiser forwards per batch (a forward serves the whole batch, so a batch costs as many
as its slowest sample), steps used per sample (mean; what a batch of one would cost), gen PPL
± one standard error (delta method over samples, ``experiments.provenance.gen_nll_se``, times
the PPL), mean per-sample unigram entropy (nats), CPU seconds. The target, per block length
and τ: forwards ≤ 0.5× those of ``confidence/2`` with the gen PPL no more than one standard
error of the difference above its gen PPL. Needs the project installed (``pip install -e .``).
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from frontier_methods import compose_run

from decoding import Coordinator
from experiments.config import build
from experiments.metrics import Evaluator
from experiments.provenance import gen_nll_se

CONFIDENCE = "decoding.strategies.confidence.Confidence"
THRESHOLD = "decoding.strategies.threshold.Threshold"


def overrides(block: int, length: int, tau: float | None) -> list[str]:
    """Hydra overrides of conf/run.yaml for one method (tau None: confidence/2)."""
    if block >= length:
        return ["strategy=confidence"] if tau is None else \
            ["strategy=threshold", f"strategy.threshold={tau}"]
    inner = [f"strategy.inner._target_={CONFIDENCE if tau is None else THRESHOLD}"]
    if tau is not None:
        inner.append(f"+strategy.inner.threshold={tau}")
    return ["strategy=blocks", f"strategy.block_length={block}", *inner]


def measure(den, evaluator, block: int, length: int, tau: float | None, n: int,
            seed: int) -> dict:
    cfg = compose_run(overrides(block, length, tau))
    name = "threshold" if tau is not None else "confidence"
    strategy = build(cfg.strategy, "strategy", {"strategy": name},
                     eos_id=lambda: evaluator.eos_id)
    coord = Coordinator(den, strategy, None, build(cfg.schedule, "schedule"),
                        temperature=cfg.temperature, top_p=cfg.top_p)
    steps = length if tau is not None else length // 2
    cpu = time.process_time()
    res = coord.generate(n, length, steps, generator=torch.Generator().manual_seed(seed),
                         batch_size=n)
    cpu = time.process_time() - cpu
    quality = evaluator(res.tokens)
    se = gen_nll_se(evaluator, res.tokens)
    return {"block": block, "method": "confidence/2" if tau is None else f"threshold@{tau:g}",
            "tau": tau, "steps": steps, "forwards": res.nfe["denoiser"] / res.num_batches,
            "steps_used": res.steps_used,
            "steps_used_max": float(res.steps_per_sample.max()),
            "gen_ppl": quality["gen_ppl"], "gen_ppl_se": quality["gen_ppl"] * se,
            "entropy": quality["entropy"], "cpu_seconds": cpu, "num_samples": n}


def verdict(row: dict, base: dict) -> dict:
    ratio = row["forwards"] / base["forwards"]
    se = math.hypot(row["gen_ppl_se"], base["gen_ppl_se"])
    diff = row["gen_ppl"] - base["gen_ppl"]
    return {"ratio": ratio, "ppl_diff": diff, "ppl_diff_se": se,
            "passed": ratio <= 0.5 and diff <= se}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--thresholds", default="0.7,0.9", help="comma list of τ in (0, 1]")
    p.add_argument("--blocks", default="128,32", help="comma list of block lengths")
    p.add_argument("--num-samples", type=int, default=64, help="per method (one batch)")
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--quick", action="store_true", help="4 samples of 32 tokens")
    a = p.parse_args(argv)
    if a.quick:
        a.num_samples, a.length, a.blocks = 4, 32, "32,16"
    torch.set_num_threads(a.threads)
    taus = [float(t) for t in a.thresholds.split(",")]
    blocks = [int(b) for b in a.blocks.split(",")]
    if a.length % 2:
        raise SystemExit(f"--length must be even (confidence/2 takes length/2 steps), "
                         f"got {a.length}")
    models = compose_run([])
    den, judge = build(models.denoiser, "denoiser"), build(models.judge, "judge")
    tok = den.tokenizer
    evaluator = Evaluator(judge, tok, tok.eos_token_id)
    print(f"{a.num_samples} samples x {a.length} tokens per method, one batch, seed {a.seed}, "
          f"temperature {models.temperature:g}, {torch.get_num_threads()} thread(s)")
    head = (f"{'block':>5} {'method':<15} {'steps':>5} {'forwards':>8} {'used':>7} "
            f"{'max':>4} {'gen PPL':>15} {'entropy':>7} {'cpu s':>6}  target")
    print(head)
    rows, start = [], time.process_time()
    for block in blocks:
        base = None
        for tau in [None, *taus]:
            row = measure(den, evaluator, block, a.length, tau, a.num_samples, a.seed)
            if base is None:
                base, note = row, "(baseline)"
            else:
                row.update(verdict(row, base))
                note = (f"{row['ratio']:.2f}x forwards, PPL {row['ppl_diff']:+.2f} "
                        f"(1 s.e. {row['ppl_diff_se']:.2f}): "
                        f"{'PASS' if row['passed'] else 'FAIL'}")
            rows.append(row)
            ppl = f"{row['gen_ppl']:.3f} ± {row['gen_ppl_se']:.3f}"
            print(f"{block:>5} {row['method']:<15} {row['steps']:>5} {row['forwards']:>8.0f} "
                  f"{row['steps_used']:>7.2f} {row['steps_used_max']:>4.0f} {ppl:>15} "
                  f"{row['entropy']:>7.3f} {row['cpu_seconds']:>6.1f}  {note}", flush=True)
    done = [r for r in rows if "passed" in r]
    print(f"target (<= 0.5x forwards at a gen PPL within one s.e.): "
          f"{sum(r['passed'] for r in done)} of {len(done)} passed; "
          f"total CPU {time.process_time() - start:.0f} s")
    return rows


if __name__ == "__main__":
    main()
