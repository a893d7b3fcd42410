"""Peak host memory of loading a Dream-shaped checkpoint, against its bf16 file size.

Writes a random ~1.15B-parameter Dream checkpoint (hidden 2048, 12 layers, GQA 16/2 heads, MLP
5632, the real 152064 rows; bf16 in 4 shards with the hub's index and tokenizer files), then
loads it with ``models.load_denoiser`` in bf16 in a fresh process and reads that process's peak
resident set (``VmHWM``). The figure is the peak over the weights' bytes on disk; the same
less the process's resident set just before the load (interpreter, torch, transformers) is
printed beside it. Usage::

    python benchmarks/family_memory.py [--folder DIR] [--layers 12] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROWS, FIRST_SPECIAL = 152064, 151643
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [
    f"<|qwen_special_{i}|>" for i in range(19)] + ["<|beginoftext|>", "<|mask|>"]


def write_checkpoint(folder: Path, hidden: int = 2048, layers: int = 12, heads: int = 16,
                     kv_heads: int = 2, intermediate: int = 5632, shards: int = 4) -> int:
    """A random Dream checkpoint in the hub's format; returns the weights' bytes on disk."""
    import torch
    from safetensors.torch import save_file
    from tokenizers.pre_tokenizers import ByteLevel

    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"architectures": ["DreamModel"], "model_type": "Dream", "hidden_act": "silu",
           "hidden_size": hidden, "intermediate_size": intermediate, "mask_token_id": 151666,
           "max_position_embeddings": 2048, "num_attention_heads": heads,
           "num_hidden_layers": layers, "num_key_value_heads": kv_heads,
           "pad_token_id": 151643, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
           "tie_word_embeddings": False, "torch_dtype": "bfloat16", "vocab_size": ROWS}
    (folder / "config.json").write_text(json.dumps(cfg))
    vocab = {c: i for i, c in enumerate(sorted(ByteLevel.alphabet()))}
    vocab.update({f"f{i}": i for i in range(len(vocab), FIRST_SPECIAL)})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    added = {str(FIRST_SPECIAL + i): {"content": s, "special": True, "lstrip": False,
                                      "rstrip": False, "normalized": False,
                                      "single_word": False} for i, s in enumerate(SPECIALS)}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "added_tokens_decoder": added, "tokenizer_class": "DreamTokenizer",
        "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "mask_token": "<|mask|>"}))

    kv = kv_heads * hidden // heads
    shapes = {"model.embed_tokens.weight": (ROWS, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (hidden,),
                       p + "post_attention_layernorm.weight": (hidden,),
                       p + "self_attn.q_proj.weight": (hidden, hidden),
                       p + "self_attn.q_proj.bias": (hidden,),
                       p + "self_attn.k_proj.weight": (kv, hidden),
                       p + "self_attn.k_proj.bias": (kv,),
                       p + "self_attn.v_proj.weight": (kv, hidden),
                       p + "self_attn.v_proj.bias": (kv,),
                       p + "self_attn.o_proj.weight": (hidden, hidden),
                       p + "mlp.gate_proj.weight": (intermediate, hidden),
                       p + "mlp.up_proj.weight": (intermediate, hidden),
                       p + "mlp.down_proj.weight": (hidden, intermediate)})
    shapes.update({"model.norm.weight": (hidden,), "lm_head.weight": (ROWS, hidden)})
    total = sum(2 * torch.Size(s).numel() for s in shapes.values())
    per_shard, names, weight_map, part, size = total / shards, [], {}, {}, 0
    gen = torch.Generator().manual_seed(0)

    def flush():
        name = f"model-{len(names) + 1:05d}-of-{shards:05d}.safetensors"
        save_file(part, str(folder / name), metadata={"format": "pt"})
        names.append(name)
        weight_map.update({k: name for k in part})
        part.clear()

    for key, shape in shapes.items():
        part[key] = torch.empty(shape, dtype=torch.bfloat16).normal_(0, 0.02, generator=gen)
        size += 2 * part[key].numel()
        if size >= per_shard * (len(names) + 1) and len(names) < shards - 1:
            flush()
    flush()
    # the shard count is only known at the end: rename to the hub's "-of-" names
    final = [n.replace(f"-of-{shards:05d}", f"-of-{len(names):05d}") for n in names]
    for old, new in zip(names, final):
        (folder / old).rename(folder / new)
    weight_map = {k: final[names.index(v)] for k, v in weight_map.items()}
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}))
    return total


_MEASURE = """
import json, sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

import models, transformers, safetensors  # what every load imports anyway
before = status("VmRSS:")
den = models.load_denoiser({folder!r}, dtype="bfloat16")
loaded = status("VmHWM:")
# Touch every page of every weight (a forward reads them all; tensors read from the shards may
# be paged in lazily), one element per 4 KiB, so the peak counts the weights in full.
with torch.no_grad():
    for p in den.parameters():
        p.view(-1)[::1024].float().sum()
params = sum(p.numel() * p.element_size() for p in den.parameters())
dtypes = sorted({{str(p.dtype) for p in den.parameters()}})
print(json.dumps({{"before": before, "peak": status("VmHWM:"), "after": status("VmRSS:"),
                  "peak_at_load": loaded, "anon": status("RssAnon:"), "file": status("RssFile:"),
                  "param_bytes": params, "dtypes": dtypes}}))
"""


def measure(folder: Path) -> dict:
    """Load ``folder`` in a fresh process; its peak RSS against the bf16 weight files' size."""
    files = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    out = subprocess.run([sys.executable, "-c", _MEASURE.format(root=str(ROOT),
                                                                folder=str(folder))],
                         capture_output=True, text=True, check=True)
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    rec.update(file_bytes=files, peak_ratio=rec["peak"] / files,
               load_ratio=(rec["peak"] - rec["before"]) / files)
    return rec


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, default=None)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--keep", action="store_true", help="keep the written checkpoint")
    args = ap.parse_args(argv)
    folder = args.folder or Path(tempfile.mkdtemp(prefix="duet-dream-mem-")) / "ckpt"
    try:
        write_checkpoint(folder, layers=args.layers)
        rec = measure(folder)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    gib = 2 ** 30
    print(f"bf16 weights on disk {rec['file_bytes'] / gib:.2f} GiB "
          f"({rec['param_bytes'] / 2 / 1e9:.2f}B parameters, loaded as {rec['dtypes']})")
    print(f"resident after touching every weight: {rec['anon'] / gib:.2f} GiB anonymous, "
          f"{rec['file'] / gib:.2f} GiB mapped from the files (peak before touching "
          f"{rec['peak_at_load'] / gib:.2f} GiB)")
    print(f"peak RSS {rec['peak'] / gib:.2f} GiB = {rec['peak_ratio']:.2f}x the files; "
          f"{(rec['peak'] - rec['before']) / gib:.2f} GiB above the {rec['before'] / gib:.2f} "
          f"GiB before loading = {rec['load_ratio']:.2f}x")
    return rec


if __name__ == "__main__":
    main()
