"""Engine overhead against the tiny denoiser's own forward, at two sizes, side by side.

    python benchmarks/overhead.py [--threads 2]

For each size: the engine's time per step with a zero-cost denoiser (every second is spent in
the Coordinator, the strategy and the float64 sampling), the tiny DDiT's forward time on the
same (B, L) with the embedded architecture (when V matches the embedded tokenizer), and the
peak memory of a full sampling step relative to the logits tensor. Target: overhead <= 5% of
the denoiser forward at the embedded default size (B=64, L=128, V=4096 with the mask).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_overhead import STRATEGIES, time_per_step  # noqa: E402

SIZES = [(64, 128, 4095), (8, 1024, 50258)]


def denoiser_forward_ms(batch: int, length: int, vocab: int, repeats: int = 3) -> float:
    """Forward time of the embedded denoiser architecture (weights do not change the time)."""
    from models import DDiT, DDiTConfig, MDLMDenoiser

    folder = Path(__file__).resolve().parents[1] / "models" / "tiny" / "denoiser"
    if (folder / "config.json").exists():
        from models import load_denoiser

        den = load_denoiser(folder)
    else:
        den = MDLMDenoiser(DDiT(DDiTConfig(vocab_size=vocab + 1, hidden_size=192, n_blocks=4,
                                           n_heads=3, max_length=length)))
    if den.vocab_size != vocab:
        return float("nan")
    x = torch.full((batch, length), den.mask_id)
    t = torch.ones(batch)
    with torch.inference_mode():
        den.log_probs(x, t)
        start = time.perf_counter()
        for _ in range(repeats):
            den.log_probs(x, t)
    return 1e3 * (time.perf_counter() - start) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--strategies", default="ancestral,confidence,margin,remdm")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"threads={a.threads}")
    for batch, length, vocab in SIZES:
        fwd = denoiser_forward_ms(batch, length, vocab) if vocab == 4095 else float("nan")
        print(f"B={batch} L={length} V={vocab}: tiny denoiser forward "
              f"{fwd:.1f} ms" if fwd == fwd else f"B={batch} L={length} V={vocab}:")
        for row in time_per_step(batch, length, vocab, a.steps, a.strategies.split(","), 2):
            share = f" = {100 * row['ms_per_step'] / fwd:.1f}% of a forward" if fwd == fwd else ""
            print(f"  {row['strategy']:<12} {row['ms_per_step']:8.1f} ms/step{share}")
        probe = Path(__file__).resolve().parent / "engine_overhead.py"
        cmd = [sys.executable, str(probe), "--memory-probe", f"--batch={batch}",
               f"--length={length}", f"--vocab={vocab}"]
        mem = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        print(f"  full sampling step: peak/logits {mem['peak_over_logits']:.2f} "
              f"(logits {mem['logits_mib']:.0f} MiB)")


if __name__ == "__main__":
    assert STRATEGIES
    main()
