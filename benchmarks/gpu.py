"""Speed and memory at the papers' shapes on one GPU (random weights; no hub needed).

    python benchmarks/gpu.py                 # CUDA: SEDD-small / GPT-2-small shapes, B=32, L=1024
    python benchmarks/gpu.py --small         # reduced shapes (the default on a CPU)

Prints, side by side in one run: the bf16 denoiser forward (trunk only; with the full output
head; with only the rows an ancestral step reveals), the unguided ancestral step and its ratio
to the trunk-plus-needed-rows forward (the engine's overhead), peak memory per method, DCD's
autoregressive variant against the AR model's own decoding (transformers ``generate``, and the
adapter's loop with the dynamic and the static KV cache, CUDA-graph step on CUDA), an EDLM
K=4 step, and tokens per second per method. Targets (GPU): ancestral step <= 1.2x the
trunk-plus-needed-rows forward; DCD autoregressive <= 1.1x (AR decoding + 2T forwards); static
AR decoding >= 2x faster than ``generate`` at B=32. Designed to finish in under 5 minutes on
one H200; on a CPU use ``--small`` (chosen automatically).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's packages

from copula import CopulaGuide  # noqa: E402
from decoding import Coordinator  # noqa: E402
from decoding.strategies import Ancestral, LeftToRight  # noqa: E402
from edlm import EnergyGuide  # noqa: E402
from models.ar.adapter import HFCausalLM  # noqa: E402
from models.ddit.backbone import DDiT, DDiTConfig  # noqa: E402
from models.ddit.heads import SEDDDenoiser  # noqa: E402

FULL = dict(batch=32, length=1024, hidden=768, blocks=12, heads=12, ar_layers=12, ar_hidden=768,
            steps=64, dcd_steps=32, edlm_steps=8)
SMALL = dict(batch=2, length=128, hidden=128, blocks=2, heads=2, ar_layers=2, ar_hidden=128,
             steps=16, dcd_steps=8, edlm_steps=4)
V = 50257


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats=1):
    """Best wall-clock of ``repeats`` calls (seconds) and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


class Peak:
    """Peak memory above the start of the block (CUDA allocator; None on a CPU)."""

    def __init__(self, device):
        self.device, self.gib = device, None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.gib = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**30


def build(a, device, dtype):
    cfg = DDiTConfig(vocab_size=V + 1, hidden_size=a.hidden, cond_dim=128, n_blocks=a.blocks,
                     n_heads=a.heads, max_length=a.length)
    torch.manual_seed(0)
    backbone = DDiT(cfg)
    with torch.no_grad():
        for name, p in backbone.named_parameters():
            if "norm" not in name:  # LayerNorm weights stay at one
                p.normal_(0.0, 0.02)
    backbone = backbone.to(device=device, dtype=dtype).eval()
    backbone.rotary_emb.inv_freq = backbone.rotary_emb.inv_freq.float()
    den = SEDDDenoiser(backbone)
    from transformers import GPT2Config, GPT2LMHeadModel

    gcfg = GPT2Config(n_layer=a.ar_layers, n_embd=a.ar_hidden, n_head=max(1, a.ar_hidden // 64),
                      vocab_size=V, n_positions=a.length + 1, bos_token_id=V - 1,
                      eos_token_id=V - 1)  # + 1: the AR adapter counts BOS + L for scoring
    gpt = GPT2LMHeadModel(gcfg).to(device=device, dtype=dtype).eval()
    return den, gpt


def ar_decode(ar: HFCausalLM, batch, length, generator):
    """The adapter's own sampling loop: BOS, then one token at a time (L - 1 extends)."""
    logp, cache = ar.start(batch)
    out = []
    for i in range(length):
        tok = torch.multinomial(logp.exp(), 1, generator=generator)
        out.append(tok)
        if i + 1 < length:
            logp = ar.extend(cache, tok)[:, -1]
    return torch.cat(out, dim=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="reduced shapes (default on a CPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="bfloat16 on CUDA, float32 on a CPU")
    p.add_argument("--no-compile", action="store_true", help="skip the CUDA-graph AR step")
    for key in FULL:
        p.add_argument("--" + key.replace("_", "-"), type=int, default=None)
    a = p.parse_args()
    device = torch.device(a.device)
    shapes = SMALL if (a.small or device.type != "cuda") else FULL
    for key, value in shapes.items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    dtype = getattr(torch, a.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    if device.type == "cpu":
        torch.set_num_threads(1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU, 1 thread"
    B, L = a.batch, a.length
    print(f"{name}; {dtype}; B={B} L={L} V={V}; denoiser H={a.hidden} x{a.blocks} blocks; "
          f"AR H={a.ar_hidden} x{a.ar_layers} layers; random weights")
    den, gpt = build(a, device, dtype)
    gen = torch.Generator(device).manual_seed(0)
    x = torch.full((B, L), den.mask_id, device=device)
    t = torch.ones(B, device=device)
    reveal = torch.rand(B, L, device=device, generator=gen) < 1.0 / a.steps
    rep = 3
    with torch.inference_mode():
        sigma = den.noise_input(t)
        den.log_probs(x, t, rows=reveal)  # warm-up (kernels, allocator)
        trunk, _ = timed(lambda: den.backbone.head_features(x, sigma), device, rep)
        with Peak(device) as pk_full:
            full, _ = timed(lambda: den.log_probs(x, t), device, rep)
        with Peak(device) as pk_rows:
            rows, _ = timed(lambda: den.log_probs(x, t, rows=reveal), device, rep)
    out_gib = B * L * V * 4 / 2**30
    print(f"denoiser forward: trunk {1e3 * trunk:.1f} ms | trunk + full head {1e3 * full:.1f} ms"
          f" | trunk + needed rows ({int(reveal.sum())} of {B * L}) {1e3 * rows:.1f} ms")
    if pk_full.gib is not None:
        print(f"  peak above weights: full {pk_full.gib:.2f} GiB ({pk_full.gib / out_gib:.2f}x "
              f"its float32 output), rows {pk_rows.gib:.2f} GiB")

    results = {}

    def run(label, coord, steps, n_tokens=B * L):
        g = torch.Generator(device).manual_seed(1)
        with Peak(device) as pk:
            sec, res = timed(lambda: coord.generate(B, L, steps, generator=g), device)
        results[label] = (sec, pk.gib, n_tokens / sec, res)
        return sec, res

    anc, _ = run(f"ancestral {a.steps} steps", Coordinator(den, Ancestral()), a.steps)
    anc_full, _ = run(f"ancestral {a.steps} steps, every row",
                      Coordinator(den, Ancestral(), rows_only=False), a.steps)
    step = anc / a.steps
    print(f"ancestral step: {1e3 * step:.1f} ms = {step / rows:.2f}x the trunk + needed rows "
          f"forward (target <= 1.2), {step / trunk:.2f}x the trunk; every row: "
          f"{1e3 * anc_full / a.steps:.1f} ms")

    kinds = [("dynamic", False), ("static", False)]
    if device.type == "cuda" and not a.no_compile:
        kinds.append(("static", True))
    decode = {}
    g = torch.Generator(device).manual_seed(2)
    for kind, comp in kinds:
        ar = HFCausalLM(gpt, bos_id=V - 1, vocab_size=V, cache=kind, compile_step=comp)
        try:
            with torch.inference_mode():
                ar_decode(ar, B, min(L, 16), g)  # warm-up (and graph capture)
                decode[(kind, comp)], _ = timed(lambda ar=ar: ar_decode(ar, B, L, g), device)
        except Exception as err:  # a failed capture must not lose the other figures
            print(f"  AR decoding with cache={kind}, compile_step={comp} failed: {err!r:.300}")
    bos = torch.full((B, 1), V - 1, device=device)
    with torch.inference_mode():
        hf, _ = timed(lambda: gpt.generate(bos, attention_mask=torch.ones_like(bos),
                                           max_new_tokens=L - 1, min_new_tokens=L - 1,
                                           do_sample=True, top_k=0, pad_token_id=V - 1), device)
    labels = {("dynamic", False): "dynamic cache", ("static", False): "static cache",
              ("static", True): "static cache + CUDA graph"}
    print(f"AR decoding of {L} tokens at B={B}: transformers generate {hf:.2f} s; " + "; ".join(
        f"{labels[k]} {v:.2f} s ({hf / v:.2f}x faster)" for k, v in decode.items())
        + " (target >= 2x with the static cache)")

    best_kind = min(decode, key=decode.get)
    ar = HFCausalLM(gpt, bos_id=V - 1, vocab_size=V, cache=best_kind[0],
                    compile_step=best_kind[1])
    dcd, res = run(f"DCD autoregressive {a.dcd_steps} steps",
                   Coordinator(den, LeftToRight(), CopulaGuide(ar)), a.dcd_steps)
    reference = decode[best_kind] + 2 * a.dcd_steps * trunk
    print(f"DCD autoregressive, {a.dcd_steps} steps: {dcd:.2f} s = {dcd / reference:.2f}x "
          f"(AR decoding {decode[best_kind]:.2f} s + 2T trunk forwards "
          f"{2 * a.dcd_steps * trunk:.2f} s) (target <= 1.1); forwards {res.nfe}")

    ar = HFCausalLM(gpt, bos_id=V - 1, vocab_size=V)
    edlm = Coordinator(den, Ancestral(), EnergyGuide(ar, num_candidates=4))
    g = torch.Generator(device).manual_seed(3)
    with Peak(device) as pk:
        one, _ = timed(lambda: edlm.generate(B, L, 1, generator=g), device)
    print(f"EDLM K=4 step (all {L} positions masked): {1e3 * one:.0f} ms"
          + (f", peak {pk.gib:.2f} GiB" if pk.gib is not None else ""))
    run(f"EDLM K=4 {a.edlm_steps} steps", edlm, a.edlm_steps)

    print("method: seconds, tokens/s, peak GiB above weights")
    for label, (sec, gib, tps, _) in results.items():
        mem = "n/a (CPU: see benchmarks/memory.py)" if gib is None else f"{gib:.2f}"
        print(f"  {label:<34} {sec:8.2f} s {tps:10.0f} tok/s  {mem}")
    print(f"  {'AR alone, ' + labels[best_kind]:<34} {decode[best_kind]:8.2f} s "
          f"{B * L / decode[best_kind]:10.0f} tok/s")


if __name__ == "__main__":
    main()
