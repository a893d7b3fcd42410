"""DCD with a short-sighted copula on the exact HMM oracle: the paper's rule against the window.

    python benchmarks/copula_context.py                 # about 3 minutes, one thread
    python benchmarks/copula_context.py --samples 4000 --contexts 1

The AR copula is the exact short-sighted model p(x_i | x_{i-c} .. x_{i-1}) of an HMM language
(``HMMAutoregressive(hmm, context=c)``), the denoiser the exact one. For each step count the
script samples with DCD under the paper's rule (``context="full"``: the causal pass removes the
whole prefix from V) and with the window hidden from the causal pass (``context="auto"``), left
to right and in random order, and prints the TV to the true joint (enumerated) and the exact
gen NLL against the entropy rate; the noise floor is the TV of as many exact draws.
"""

from __future__ import annotations

import argparse
import time

import torch

from copula import CopulaGuide
from decoding import Coordinator
from decoding.strategies import Ancestral, LeftToRight
from models import HMM, HMMAutoregressive, HMMDenoiser

STRATEGIES = {"left_to_right": LeftToRight, "ancestral": lambda: Ancestral(mode="exact")}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=20000)
    p.add_argument("--contexts", default="1,2", help="comma list of copula contexts c")
    p.add_argument("--steps", default="1,2,4,8")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    hmm = HMM.random(4, 8, 8, seed=0, concentration=0.2)
    den, n = HMMDenoiser(hmm), a.samples
    print(f"{hmm!r}, random(concentration=0.2, seed=0); {n} samples per point; noise floor "
          f"TV {hmm.tv_noise_floor(n):.3f}; entropy rate {hmm.entropy_rate():.4f} nats/token")
    print("| c | strategy | steps | TV, paper's rule | TV, window hidden | gen NLL, paper's "
          "rule | gen NLL, window hidden |")
    print("|---|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    for c in (int(v) for v in a.contexts.split(",")):
        ar = HMMAutoregressive(hmm, context=c)
        for name, make in STRATEGIES.items():
            for steps in (int(v) for v in a.steps.split(",")):
                cells = []
                for context in ("full", "auto"):
                    coord = Coordinator(den, make(), CopulaGuide(ar, context=context))
                    gen = torch.Generator().manual_seed(steps)
                    tokens = coord.generate(n, hmm.length, steps, generator=gen,
                                            batch_size=n).tokens
                    cells.append((hmm.tv(tokens), hmm.gen_nll(tokens)))
                (tv_f, nll_f), (tv_w, nll_w) = cells
                print(f"| {c} | {name} | {steps} | {tv_f:.3f} | {tv_w:.3f} | {nll_f:.4f} | "
                      f"{nll_w:.4f} |", flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
