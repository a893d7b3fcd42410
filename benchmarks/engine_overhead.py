"""The engine's own cost: time per step with a zero-cost denoiser, and the peak memory of one
sampling step relative to the logits tensor.

    python benchmarks/engine_overhead.py                      # B=8, L=1024, V=50258
    python benchmarks/engine_overhead.py --batch 64 --length 128 --vocab 4096

The denoiser returns a precomputed (B, L, V) tensor, so every second measured is spent in the
Coordinator, the strategy and the float64 sampling. Memory is measured in a fresh process
(peak resident set size after the logits exist, around one step that drafts every position).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from decoding import Coordinator
from decoding.guides import Independent
from decoding.strategies import Ancestral, Confidence, LeftToRight, ReMDM

STRATEGIES = {
    "ancestral": lambda: Ancestral(mode="exact"),
    "confidence": lambda: Confidence("prob"),
    "margin": lambda: Confidence("margin"),
    "left_to_right": lambda: LeftToRight(),
    "remdm": lambda: ReMDM("cap", eta=0.04),
}


class ZeroCostDenoiser(torch.nn.Module):
    """Returns the same normalised log-probs every call: no compute of its own."""

    supports_causal = False
    time_conditioned = True  # so the engine never skips a call on its own

    def __init__(self, batch: int, length: int, vocab: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        # Filled in place, a few rows at a time, so building it leaves no temporary peak
        # that would hide the sampling step's own peak in the memory probe.
        self.logits = torch.empty(batch, length, vocab)
        rows = self.logits.view(-1, vocab)
        for start in range(0, rows.shape[0], 64):
            chunk = rows[start : start + 64]
            chunk.normal_(generator=g)
            chunk -= chunk.logsumexp(-1, keepdim=True)
        self.vocab_size, self.mask_id, self.max_length = vocab, vocab, length

    def log_probs(self, x, t, causal=False):
        return self.logits


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_probe(batch: int, length: int, vocab: int, top_p: float) -> dict:
    """Peak extra memory of one step that drafts every position (run in a fresh process)."""
    den = ZeroCostDenoiser(batch, length, vocab)
    x = torch.full((batch, length), vocab)
    coord = Coordinator(den, Confidence("prob"), Independent(), top_p=top_p)
    logits_bytes = den.logits.numel() * den.logits.element_size()
    base = _rss_bytes()
    coord.generate(batch, length, 1, generator=torch.Generator().manual_seed(0), prompt=x)
    extra = _rss_bytes() - base
    return {"logits_mib": logits_bytes / 2**20, "extra_mib": extra / 2**20,
            "peak_over_logits": (logits_bytes + extra) / logits_bytes}


def time_per_step(batch, length, vocab, steps, names, repeats) -> list[dict]:
    den = ZeroCostDenoiser(batch, length, vocab)
    rows = []
    for name in names:
        coord = Coordinator(den, STRATEGIES[name]())
        best = float("inf")
        for r in range(repeats):
            t0 = time.perf_counter()
            coord.generate(batch, length, steps, generator=torch.Generator().manual_seed(r))
            best = min(best, time.perf_counter() - t0)
        rows.append({"strategy": name, "steps": steps, "ms_per_step": 1e3 * best / steps})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=50258)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--strategies", default="ancestral,confidence,margin,left_to_right,remdm")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.memory_probe:
        print(json.dumps(memory_probe(a.batch, a.length, a.vocab, a.top_p)))
        return
    print(f"B={a.batch} L={a.length} V={a.vocab} threads={torch.get_num_threads()}")
    for row in time_per_step(a.batch, a.length, a.vocab, a.steps, a.strategies.split(","),
                             a.repeats):
        print(f"  {row['strategy']:<14} {row['ms_per_step']:8.1f} ms/step (engine only)")
    for top_p in (1.0, 0.9):
        cmd = [sys.executable, __file__, "--memory-probe", f"--batch={a.batch}",
               f"--length={a.length}", f"--vocab={a.vocab}", f"--top-p={top_p}"]
        mem = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        print(f"  one full sampling step, top_p={top_p}: logits {mem['logits_mib']:.0f} MiB, "
              f"extra {mem['extra_mib']:.0f} MiB, peak/logits {mem['peak_over_logits']:.2f}")


if __name__ == "__main__":
    main()
