"""Peak memory of the denoiser and of whole samplers, as ratios to the tensors they need.

    python benchmarks/memory.py                       # B=4, L=1024, V=50257 (about 5 min)
    python benchmarks/memory.py --length 256 --only log_probs,ancestral

Every figure is measured in a fresh process: the peak resident set size (``ru_maxrss``) after
the models and inputs exist, minus the resident size just before the measured call, divided by
a reference size:

* ``log_probs``: one full call of a DDiT denoiser with GPT-2's vocabulary, against its own
  float32 (B, L, V) output (target <= 1.5x), next to the plain head (linear over V+1 columns,
  then log_softmax) for comparison;
* ``ancestral``: a 64-step unguided ancestral generation, against one (B, L, V) float32
  tensor (target <= 0.5x), with and without rows-only calls;
* ``edlm`` / ``dcd``: one step from the fully masked sequence (every position drafted), against
  what the step's candidates need: the float32 marginal rows they read (DCD: bidirectional
  and causal) plus the AR log-probs of one scoring chunk (EDLM) (target <= 1.5x).

Models have random weights in the real vocabulary and small hidden sizes (the trunk is not what
is measured; ``--hidden`` changes it). Single thread, CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's packages

V = 50257


def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status_rss() -> int:
    """Current (not peak) resident size."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return _rss()


def denoiser(a):
    from models.ddit.backbone import DDiT, DDiTConfig
    from models.ddit.heads import MDLMDenoiser

    cfg = DDiTConfig(vocab_size=V + 1, hidden_size=a.hidden, cond_dim=32, n_blocks=2,
                     n_heads=max(1, a.hidden // 64), max_length=a.length)
    den = MDLMDenoiser(DDiT(cfg)).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in den.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return den


def ar_model(a):
    from transformers import GPT2Config, GPT2LMHeadModel

    from models.ar.adapter import HFCausalLM

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=a.hidden, n_head=max(1, a.hidden // 64), vocab_size=V,
                     n_positions=a.length + 1, bos_token_id=V - 1, eos_token_id=V - 1)
    return HFCausalLM(GPT2LMHeadModel(cfg).eval())


def probe(a) -> dict:
    """One measurement (run in a fresh process)."""
    from copula import CopulaGuide
    from decoding import Coordinator
    from decoding.strategies import Ancestral
    from edlm import EnergyGuide
    from edlm.energies.ar import MAX_SCORE_ELEMENTS

    torch.set_num_threads(1)
    B, L = a.batch, a.length
    logits = B * L * V * 4
    den = denoiser(a)
    ar = ar_model(a) if a.probe in ("edlm", "dcd") else None  # built outside inference mode
    x = torch.full((B, L), den.mask_id)
    t = torch.ones(B)
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        if a.probe in ("log_probs", "plain_head"):
            base = _status_rss()
            if a.probe == "log_probs":
                out = den.log_probs(x, t)
            else:
                out = torch.log_softmax(den.backbone(x, den.noise_input(t))[..., :V], dim=-1)
            return {"added": _rss() - base, "reference": out.numel() * 4}
        if a.probe in ("ancestral", "ancestral_full"):
            coord = Coordinator(den, Ancestral(), rows_only=a.probe == "ancestral")
            base = _status_rss()
            coord.generate(B, L, 64, generator=gen)
            return {"added": _rss() - base, "reference": logits}
        if a.probe == "edlm":
            k = 4
            guide = EnergyGuide(ar, num_candidates=k)
            chunk = max(1, MAX_SCORE_ELEMENTS // (L * V))
            need = B * L * V * 4 + min(chunk, B * k) * L * V * 4
        else:
            guide = CopulaGuide(ar)
            need = 2 * B * L * V * 4
        coord = Coordinator(den, Ancestral(), guide)
        base = _status_rss()
        coord.generate(B, L, 1, generator=gen)
        return {"added": _rss() - base, "reference": need}


PROBES = {
    "log_probs": ("full log_probs call / its float32 output", 1.5),
    "plain_head": ("plain head (linear + log_softmax) / same output", None),
    "ancestral": ("64-step ancestral, rows-only / one (B, L, V) float32", 0.5),
    "ancestral_full": ("64-step ancestral, every row / one (B, L, V) float32", None),
    "edlm": ("one EDLM K=4 step / its marginal rows + one AR scoring chunk", 1.5),
    "dcd": ("one DCD step / its bidirectional + causal rows", 1.5),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--length", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--only", default=",".join(PROBES))
    p.add_argument("--probe", help="internal: run one measurement and print JSON")
    a = p.parse_args()
    if a.probe:
        print(json.dumps(probe(a)))
        return
    print(f"B={a.batch} L={a.length} V={V} hidden={a.hidden}; one (B, L, V) float32 = "
          f"{a.batch * a.length * V * 4 / 2**20:.0f} MiB; peak RSS added, fresh process each")
    for name in a.only.split(","):
        label, target = PROBES[name]
        cmd = [sys.executable, __file__, f"--probe={name}", f"--batch={a.batch}",
               f"--length={a.length}", f"--hidden={a.hidden}"]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode:
            print(f"  {name}: failed\n{run.stderr[-2000:]}")
            continue
        r = json.loads(run.stdout.strip().splitlines()[-1])
        ratio = r["added"] / r["reference"]
        verdict = "" if target is None else ("  PASS" if ratio <= target else "  MISS")
        goal = "" if target is None else f" (target <= {target})"
        print(f"  {label}: {r['added'] / 2**20:.0f} MiB / {r['reference'] / 2**20:.0f} MiB "
              f"= {ratio:.2f}x{goal}{verdict}")


if __name__ == "__main__":
    main()
