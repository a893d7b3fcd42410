"""The denoiser KV cache (``decoding.cache``): speed, forwards and quality, side by side.

    python benchmarks/cache.py                    # all three parts, 1 thread (~15 min on a CPU)
    python benchmarks/cache.py --parts shapes     # one part: quality, shapes, dcd
    python benchmarks/cache.py --quick            # seconds (the smoke test)

``quality``: the embedded default models of ``conf/run.yaml`` (the tiny Shakespeare denoiser,
scored by the tiny judge as ``experiments.run`` scores them). For each block length of
``--blocks`` and threshold τ of ``--thresholds``, ``strategy=blocks`` with Fast-dLLM's
``Threshold`` inside (``steps`` = length as the cap) draws ``--num-samples`` unconditional
samples in one batch from the same seed with ``cache`` none, prefix and dual. Printed:
generated tokens per CPU second, denoiser forwards per batch and token positions they ran
per sample, steps used, gen PPL ± one standard error, entropy (nats); the cached rows against
their uncached row.

``shapes``: Dream-7B and LLaDA-8B shapes at reduced size on the CPU (``--width`` of the hidden
size and ``--layers`` layers, the real head sizes and vocabularies, or ``--vocab`` rows so that
the output head keeps its real share of the forward; random weights), one
sample of ``--positions`` positions, blocks of ``--block``, a fixed number of steps per block
(``--steps-per-block``, top-confidence inside each block). Printed: seconds per generated token
and per step for each cache mode, and the target: a dual-cache step at most 0.35x an uncached
step, for the steps inside a block (against the uncached steps at the same places) and on
average over the blocks, refreshes included.

``dcd``: DCD (``copula.CopulaGuide``) over blocks with the prefix cache on the embedded
models. The denoiser's and the AR model's calls are timed inside the run; the guide's own
decoding is the AR model sampling the same number of tokens alone with its KV cache
(``experiments.baselines.sample``). Target: DCD's wall-clock at most 1.2x (the AR model's own
decoding + the cached denoiser passes). Ratios are measured in one process, side by side;
times are CPU seconds of the process (``time.process_time``, one thread by default), which a
shared machine's other load disturbs far less than the wall-clock.
"""

from __future__ import annotations

import argparse
import math
import time
from contextlib import contextmanager

import torch
from frontier_methods import compose_run

from copula import CopulaGuide
from decoding import Coordinator
from decoding.loop import BatchLoop
from decoding.strategies import Blocks, Confidence, LeftToRight, Threshold
from experiments.baselines import sample
from experiments.config import build
from experiments.metrics import Evaluator
from experiments.provenance import gen_nll_se

MODES = ("none", "prefix", "dual")


def quality(a, den, evaluator) -> list[dict]:
    rows = []
    print(f"\n[quality] {a.num_samples} samples x {a.length} tokens, one batch, seed {a.seed}")
    print(f"{'block':>5} {'tau':>4} {'cache':<6} {'tok/s':>7} {'fwd':>5} {'tokens/sample':>13} "
          f"{'used':>6} {'gen PPL':>15} {'entropy':>7}  vs none")
    for block in a.blocks:
        for tau in a.thresholds:
            base = None
            for mode in MODES:
                coord = Coordinator(den, Blocks(block, Threshold(tau)), cache=mode)
                t0 = time.process_time()
                res = coord.generate(a.num_samples, a.length, a.length, batch_size=a.num_samples,
                                     generator=torch.Generator().manual_seed(a.seed))
                wall = time.process_time() - t0
                q = evaluator(res.tokens)
                row = {"part": "quality", "block": block, "tau": tau, "cache": mode,
                       "tok_per_s": res.tokens.numel() / wall, "forwards": res.nfe["denoiser"],
                       "tokens_per_sample": res.denoiser_tokens / a.num_samples,
                       "steps_used": res.steps_used, "gen_ppl": q["gen_ppl"],
                       "gen_ppl_se": q["gen_ppl"] * gen_nll_se(evaluator, res.tokens),
                       "entropy": q["entropy"], "seconds": wall}
                base = base or row
                note = "" if row is base else (
                    f"{row['tok_per_s'] / base['tok_per_s']:.2f}x tok/s, PPL "
                    f"{row['gen_ppl'] - base['gen_ppl']:+.2f} (1 s.e. "
                    f"{math.hypot(row['gen_ppl_se'], base['gen_ppl_se']):.2f})")
                ppl = f"{row['gen_ppl']:.2f} ± {row['gen_ppl_se']:.2f}"
                print(f"{block:>5} {tau:>4g} {mode:<6} {row['tok_per_s']:>7.1f} "
                      f"{row['forwards']:>5} {row['tokens_per_sample']:>13.0f} "
                      f"{row['steps_used']:>6.1f} {ppl:>15} {row['entropy']:>7.3f}  {note}",
                      flush=True)
                rows.append(row)
    return rows


def _random(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            noise = torch.randn(p.shape, generator=g) * 0.02
            p.copy_(noise if p.dim() > 1 else 1.0 + noise)  # 1-D: norm weights near one


def dream_like(width: float, layers: int, vocab: int | None = None):
    """Dream-v0-7B's shape (hidden 3584, 28 layers, 28 heads of 128, 4 key/value heads,
    152064 rows) with the hidden size scaled by ``width``, ``layers`` layers and, when given,
    ``vocab`` rows (the mask the last)."""
    from models.families._common import space_for
    from models.families.dream import DreamDenoiser, _DreamNetwork, qwen2_config

    heads = max(1, round(28 * width))
    rows = vocab or 152064
    cfg = dict(vocab_size=rows, hidden_size=heads * 128, intermediate_size=round(18944 * width),
               num_hidden_layers=layers, num_attention_heads=heads,
               num_key_value_heads=max(1, round(4 * width)), hidden_act="silu",
               max_position_embeddings=2048, rms_norm_eps=1e-6, rope_theta=1e6)
    net = _DreamNetwork(qwen2_config(cfg))
    _random(net, 0)
    mask = 151666 if vocab is None else rows - 1
    return DreamDenoiser(net, space_for(None, mask, rows), None, 2048).eval()


def llada_like(width: float, layers: int, vocab: int | None = None):
    """LLaDA-8B's shape (d_model 4096, 32 layers, 32 heads of 128, SwiGLU 12288, 126464 rows)
    with the width scaled by ``width``, ``layers`` layers and, when given, ``vocab`` rows."""
    from models.families._common import space_for
    from models.families.llada import LLaDADenoiser
    from models.families.llada_network import LLaDANetwork, LLaDAShape

    heads = max(1, round(32 * width))
    shape = LLaDAShape(d_model=heads * 128, n_heads=heads, n_kv_heads=heads, n_layers=layers,
                       mlp_hidden_size=round(12288 * width), embedding_size=vocab or 126464,
                       activation_type="silu", block_type="llama", layer_norm_type="rms",
                       rope_theta=500000.0,
                       weight_tying=False)
    net = LLaDANetwork(shape)
    _random(net, 0)
    mask = 126336 if vocab is None else vocab - 1
    return LLaDADenoiser(net, space_for(None, mask, vocab or 126464), None, 4096).eval()


@contextmanager
def step_clock(out: list[float]):
    """Record the CPU seconds of every ``BatchLoop.step`` (one denoising step) into ``out``."""
    plain = BatchLoop.step

    def timed(self, *args, **kw):
        t0 = time.process_time()
        try:
            return plain(self, *args, **kw)
        finally:
            out.append(time.process_time() - t0)
    BatchLoop.step = timed
    try:
        yield
    finally:
        BatchLoop.step = plain


def shapes(a) -> list[dict]:
    rows = []
    n_blocks = a.positions // a.block
    steps = n_blocks * a.steps_per_block
    print(f"\n[shapes] one sample of {a.positions} positions, blocks of {a.block}, "
          f"{a.steps_per_block} steps a block; width x{a.width:g}, {a.layers} layers, "
          f"{'the real vocabularies' if a.vocab is None else f'{a.vocab} rows'}, random")
    for name, make in (("dream", dream_like), ("llada", llada_like)):
        den = make(a.width, a.layers, a.vocab)
        with torch.inference_mode():  # one warm-up forward
            den.log_probs(torch.full((1, a.positions), den.mask_id), torch.ones(1))
        out = {}
        for mode in MODES:
            coord = Coordinator(den, Blocks(a.block, Confidence("prob")), cache=mode)
            per_step: list[float] = []
            t0 = time.process_time()
            with step_clock(per_step):
                res = coord.generate(1, a.positions, steps,
                                     generator=torch.Generator().manual_seed(a.seed))
            wall = time.process_time() - t0
            first = [s for i, s in enumerate(per_step) if i % a.steps_per_block == 0]
            inner = [s for i, s in enumerate(per_step) if i % a.steps_per_block]
            out[mode] = {"part": "shapes", "model": name, "cache": mode,
                         "s_per_token": wall / a.positions, "s_per_step": wall / steps,
                         "s_block_start": sum(first) / len(first),
                         "s_inner_step": sum(inner) / max(1, len(inner)),
                         "tokens": res.denoiser_tokens, "forwards": res.nfe["denoiser"]}
        base = out["none"]
        for mode, row in out.items():
            row["step_ratio"] = row["s_per_step"] / base["s_per_step"]
            row["inner_ratio"] = row["s_inner_step"] / base["s_inner_step"]
            print(f"  {name:<5} {mode:<6} {row['s_per_token'] * 1e3:7.1f} ms/token  "
                  f"{row['s_per_step'] * 1e3:7.1f} ms/step (x{row['step_ratio']:.2f})  "
                  f"in-block step {row['s_inner_step'] * 1e3:7.1f} ms (x{row['inner_ratio']:.2f})"
                  f"  block start {row['s_block_start'] * 1e3:7.1f} ms  "
                  f"{row['tokens']} positions run", flush=True)
            rows.append(row)
        dual = out["dual"]
        print(f"  {name} target (dual step <= 0.35x an uncached step): in-block "
              f"x{dual['inner_ratio']:.2f} {'PASS' if dual['inner_ratio'] <= 0.35 else 'FAIL'}"
              f", with its block's refresh x{dual['step_ratio']:.2f} "
              f"{'PASS' if dual['step_ratio'] <= 0.35 else 'FAIL'}")
    return rows


def _timed(obj, names: tuple[str, ...], clock: list[float]) -> None:
    """Wrap the instance's methods ``names`` so that their wall-clock adds up in clock[0]."""
    for name in names:
        inner = getattr(obj, name)

        def wrapper(*args, _inner=inner, **kw):
            t0 = time.process_time()
            try:
                return _inner(*args, **kw)
            finally:
                clock[0] += time.process_time() - t0
        setattr(obj, name, wrapper)


def dcd(a, den, ar) -> list[dict]:
    n, length, block = a.num_samples, a.length, a.dcd_block
    steps = length // a.dcd_tokens_per_step
    print(f"\n[dcd] {n} samples x {length} tokens, blocks of {block} left to right, {steps} "
          "steps, prefix cache")
    gen = torch.Generator().manual_seed(a.seed)
    t0 = time.process_time()
    with torch.inference_mode():
        sample(ar, n, length, gen)
    ar_alone = time.process_time() - t0
    den_clock, ar_clock = [0.0], [0.0]
    _timed(den, ("log_probs",), den_clock)
    _timed(ar, ("start", "extend", "log_probs"), ar_clock)
    try:
        coord = Coordinator(den, Blocks(block, LeftToRight()), CopulaGuide(ar), cache="prefix")
        t0 = time.process_time()
        res = coord.generate(n, length, steps, batch_size=n,
                             generator=torch.Generator().manual_seed(a.seed))
        total = time.process_time() - t0
    finally:
        for obj, names in ((den, ("log_probs",)), (ar, ("start", "extend", "log_probs"))):
            for name in names:
                delattr(obj, name)
    ratio = total / (ar_alone + den_clock[0])
    print(f"  DCD {total:.2f} s: denoiser passes {den_clock[0]:.2f} s ({res.nfe['denoiser']} "
          f"forwards, {res.denoiser_tokens} positions), AR calls inside {ar_clock[0]:.2f} s "
          f"({res.nfe['ar_forwards']} forwards, {res.nfe['ar_tokens']} tokens); the AR model "
          f"alone {ar_alone:.2f} s for {n} x {length} tokens")
    print(f"  target (DCD <= 1.2x (AR decoding + cached denoiser passes)): x{ratio:.2f} "
          f"{'PASS' if ratio <= 1.2 else 'FAIL'}")
    return [{"part": "dcd", "seconds": total, "denoiser_seconds": den_clock[0],
             "ar_seconds_inside": ar_clock[0], "ar_alone_seconds": ar_alone, "ratio": ratio}]


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="quality,shapes,dcd")
    p.add_argument("--thresholds", default="0.7,0.9")
    p.add_argument("--blocks", default="16,32,64")
    p.add_argument("--num-samples", type=int, default=32)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--positions", type=int, default=512)
    p.add_argument("--block", type=int, default=32)
    p.add_argument("--steps-per-block", type=int, default=4)
    p.add_argument("--width", type=float, default=0.25, help="of the real hidden size")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=None,
                   help="output rows (default: the real vocabularies); a smaller head keeps "
                        "its real share of a forward at the reduced width and depth")
    p.add_argument("--dcd-block", type=int, default=32)
    p.add_argument("--dcd-tokens-per-step", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds)")
    a = p.parse_args(argv)
    if a.quick:
        a.num_samples, a.length, a.blocks, a.thresholds = 2, 32, "16", "0.9"
        a.positions, a.block, a.steps_per_block, a.width, a.layers = 64, 16, 2, 0.04, 1
        a.dcd_block = 16
    a.blocks = [int(b) for b in str(a.blocks).split(",")]
    a.thresholds = [float(t) for t in str(a.thresholds).split(",")]
    torch.set_num_threads(a.threads)
    parts = a.parts.split(",")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU")
    rows = []
    if "quality" in parts or "dcd" in parts:
        models = compose_run([])
        den, judge = build(models.denoiser, "denoiser"), build(models.judge, "judge")
        evaluator = Evaluator(judge, den.tokenizer, den.tokenizer.eos_token_id)
        if "quality" in parts:
            rows += quality(a, den, evaluator)
        if "dcd" in parts:
            rows += dcd(a, den, build(models.ar, "ar"))
    if "shapes" in parts:
        rows += shapes(a)
    return rows


if __name__ == "__main__":
    main()
