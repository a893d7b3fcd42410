"""Random-weight checkpoints written in the hub's exact formats (Dream, LLaDA, a Qwen2 guide),
at tiny widths but with the real vocabularies, special-token ids, key names and sharding."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

# Qwen2's specials from 151643 on, then Dream's two additions (151665, 151666).
QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>"]
QWEN_FIRST_SPECIAL = 151643
DREAM_SPECIALS = QWEN_SPECIALS + ["<|beginoftext|>", "<|mask|>"]
DREAM_ROWS, QWEN_ROWS = 152064, 151936
QWEN_CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|> "
             "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant {% endif %}")

# LLaDA: <|startoftext|> 126080, <|endoftext|> 126081, reserved tokens, <|mdm_mask|> 126336,
# more reserved, then the chat tokens 126346..126348 above the mask.
LLADA_FIRST_SPECIAL = 126080
LLADA_SPECIALS = (["<|startoftext|>", "<|endoftext|>"]
                  + [f"<|reserved_token_{i}|>" for i in range(126082, 126336)] + ["<|mdm_mask|>"]
                  + [f"<|reserved_token_{i}|>" for i in range(126337, 126346)]
                  + ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"])
LLADA_ROWS = 126464
LLADA_CHAT = ("<|startoftext|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
              "<|end_header_id|> {{ m['content'] }}<|eot_id|>{% endfor %}"
              "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|> "
              "{% endif %}")


def write_word_tokenizer(folder: Path, first_special: int, specials: list[str],
                         config: dict) -> None:
    """A word-level tokenizer: filler words w0.. fill ids 0..first_special-1, the specials follow
    at their real ids; ``config`` becomes tokenizer_config.json (added_tokens_decoder added)."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(first_special)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    added = {str(first_special + i): {"content": s, "lstrip": False, "normalized": False,
                                      "rstrip": False, "single_word": False, "special": True}
             for i, s in enumerate(specials)}
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"added_tokens_decoder": added, **config}, indent=1))


def write_bpe_tokenizer(folder: Path, specials: list[str], config: dict) -> None:
    """Qwen2's format: a byte-level BPE in ``vocab.json`` + ``merges.txt`` (the 256 byte symbols,
    two merges, filler symbols up to id 151642), the specials from 151643 on."""
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {c: i for i, c in enumerate(sorted(ByteLevel.alphabet()))}
    merges = [("\u0120", "w"), ("\u0120w", "o")]  # " w", " wo"
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab.update({f"f{i}": i for i in range(len(vocab), QWEN_FIRST_SPECIAL)})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n"
                                                                    for a, b in merges))
    added = {str(QWEN_FIRST_SPECIAL + i): {"content": s, "lstrip": False, "normalized": False,
                                           "rstrip": False, "single_word": False, "special": True}
             for i, s in enumerate(specials)}
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"added_tokens_decoder": added, **config}, indent=1))


def write_shards(folder: Path, state: dict, n_shards: int = 2) -> list[str]:
    """``state`` as ``model-0000k-of-0000n.safetensors`` shards with the hub's index file."""
    from safetensors.torch import save_file

    keys = list(state)
    names, weight_map, total = [], {}, 0
    for k in range(n_shards):
        name = f"model-{k + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {key: state[key].contiguous() for key in keys[k::n_shards]}
        save_file(part, str(folder / name), metadata={"format": "pt"})
        names.append(name)
        weight_map.update({key: name for key in part})
        total += sum(v.numel() * v.element_size() for v in part.values())
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    return names


def _rand(shape, gen, scale=0.2, dtype=torch.bfloat16):
    return (torch.randn(*shape, generator=gen) * scale).to(dtype)


def _norm(n, gen, dtype=torch.bfloat16):
    return (1 + 0.1 * torch.randn(n, generator=gen)).to(dtype)


def dream_config(**over) -> dict:
    cfg = {
        "architectures": ["DreamModel"], "attention_dropout": 0.0,
        "auto_map": {"AutoConfig": "configuration_dream.DreamConfig",
                     "AutoModel": "modeling_dream.DreamModel"},
        "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu",
        "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 48,
        "mask_token_id": 151666, "max_position_embeddings": 64, "max_window_layers": 28,
        "model_type": "Dream", "num_attention_heads": 4, "num_hidden_layers": 2,
        "num_key_value_heads": 2, "pad_token_id": 151643, "rms_norm_eps": 1e-6,
        "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": None,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.46.2", "use_cache": False, "use_sliding_window": False,
        "vocab_size": DREAM_ROWS}
    return {**cfg, **over}


def dream_state(cfg: dict, seed: int = 0, dtype=torch.bfloat16) -> dict:
    """Dream's tensors by their hub names; the mask and padding rows of lm_head made large, so
    a marginal that leaked mass onto them would show it."""
    g = torch.Generator().manual_seed(seed)
    h, inter, rows = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    head_dim = h // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * head_dim
    s = {"model.embed_tokens.weight": _rand((rows, h), g, 1.0, dtype)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        s[p + "input_layernorm.weight"] = _norm(h, g, dtype)
        s[p + "post_attention_layernorm.weight"] = _norm(h, g, dtype)
        for name, out in (("q_proj", h), ("k_proj", kv), ("v_proj", kv)):
            s[p + f"self_attn.{name}.weight"] = _rand((out, h), g, dtype=dtype)
            s[p + f"self_attn.{name}.bias"] = _rand((out,), g, dtype=dtype)
        s[p + "self_attn.o_proj.weight"] = _rand((h, h), g, dtype=dtype)
        s[p + "mlp.gate_proj.weight"] = _rand((inter, h), g, dtype=dtype)
        s[p + "mlp.up_proj.weight"] = _rand((inter, h), g, dtype=dtype)
        s[p + "mlp.down_proj.weight"] = _rand((h, inter), g, dtype=dtype)
    s["model.norm.weight"] = _norm(h, g, dtype)
    head = _rand((rows, h), g, 1.0, torch.float32)
    head[cfg["mask_token_id"]:] *= 6.0
    s["lm_head.weight"] = head.to(dtype)
    return s


def write_dream(folder: Path, seed: int = 0, **over) -> Path:
    cfg = dream_config(**over)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    write_bpe_tokenizer(folder, DREAM_SPECIALS, {
        "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
        "bos_token": "<|beginoftext|>", "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "mask_token": "<|mask|>", "unk_token": None,
        "chat_template": QWEN_CHAT, "model_max_length": 131072,
        "tokenizer_class": "DreamTokenizer", "errors": "replace", "split_special_tokens": False})
    write_shards(folder, dream_state(cfg, seed))
    return folder


def llada_config(**over) -> dict:
    cfg = {
        "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0,
        "architectures": ["LLaDAModelLM"], "attention_dropout": 0.0,
        "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
        "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig",
                     "AutoModel": "modeling_llada.LLaDAModelLM",
                     "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"},
        "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama",
        "d_model": 32, "embedding_dropout": 0.0, "embedding_size": LLADA_ROWS,
        "eos_token_id": 126081, "flash_attention": False, "include_bias": False,
        "include_qkv_bias": False, "init_cutoff_factor": None, "init_device": "meta",
        "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False,
        "layer_norm_type": "rms", "layer_norm_with_affine": True, "mask_token_id": 126336,
        "max_sequence_length": 64, "mlp_hidden_size": 48, "mlp_ratio": 4, "model_type": "llada",
        "multi_query_attention": None, "n_heads": 4, "n_kv_heads": 2, "n_layers": 2,
        "pad_token_id": 126081, "precision": "amp_bf16", "residual_dropout": 0.0,
        "rms_norm_eps": 1e-05, "rope": True, "rope_full_precision": True,
        "rope_theta": 500000.0, "scale_logits": False, "transformers_version": "4.46.3",
        "use_cache": False, "vocab_size": LLADA_ROWS, "weight_tying": False}
    return {**cfg, **over}


def llada_state(cfg: dict, seed: int = 0, dtype=torch.bfloat16) -> dict:
    """LLaDA's tensors by their hub names (``model.transformer.*``), either block type."""
    g = torch.Generator().manual_seed(seed)
    d, hid, rows = cfg["d_model"], cfg["mlp_hidden_size"], cfg["embedding_size"]
    kv = cfg["n_kv_heads"] * d // cfg["n_heads"]
    qkv_bias = cfg["include_qkv_bias"] or cfg["include_bias"]
    inner = hid // 2 if cfg["activation_type"] == "swiglu" else hid
    p0 = "model.transformer."
    s = {p0 + "wte.weight": _rand((rows, d), g, 1.0, dtype)}
    for i in range(cfg["n_layers"]):
        p = f"{p0}blocks.{i}."
        s[p + "attn_norm.weight"] = _norm(d, g, dtype)
        s[p + "ff_norm.weight"] = _norm(d, g, dtype)
        if cfg["block_type"] == "llama":
            projs = (("q_proj", d), ("k_proj", kv), ("v_proj", kv))
            s[p + "up_proj.weight"] = _rand((hid, d), g, dtype=dtype)
        else:
            projs = (("att_proj", d + 2 * kv),)
        for name, out in projs:
            s[p + f"{name}.weight"] = _rand((out, d), g, dtype=dtype)
            if qkv_bias:
                s[p + f"{name}.bias"] = _rand((out,), g, dtype=dtype)
        s[p + "ff_proj.weight"] = _rand((hid, d), g, dtype=dtype)
        s[p + "attn_out.weight"] = _rand((d, d), g, dtype=dtype)
        s[p + "ff_out.weight"] = _rand((d, inner), g, dtype=dtype)
    s[p0 + "ln_f.weight"] = _norm(d, g, dtype)
    if not cfg["weight_tying"]:
        head = _rand((rows, d), g, 1.0, torch.float32)
        head[cfg["mask_token_id"]] *= 6.0
        head[len(LLADA_SPECIALS) + LLADA_FIRST_SPECIAL:] *= 6.0
        s[p0 + "ff_out.weight"] = head.to(dtype)
    return s


def write_llada(folder: Path, seed: int = 0, **over) -> Path:
    cfg = llada_config(**over)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    write_word_tokenizer(folder, LLADA_FIRST_SPECIAL, LLADA_SPECIALS, {
        "bos_token": "<|startoftext|>", "eos_token": "<|eot_id|>", "pad_token": "<|endoftext|>",
        "chat_template": LLADA_CHAT, "model_max_length": 1000000000000000019884624838656,
        "tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False})
    write_shards(folder, llada_state(cfg, seed))
    return folder


def write_qwen_guide(folder: Path, seed: int = 0) -> Path:
    """A random tiny Qwen2ForCausalLM (151936 rows) with Qwen2.5's tokenizer ids (no Dream
    additions), saved by transformers: the AR guide ``models.load_ar`` reads."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=QWEN_ROWS, hidden_size=32, intermediate_size=48,
                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, bos_token_id=151643, eos_token_id=151643,
                         tie_word_embeddings=True, initializer_range=0.5)
    Qwen2ForCausalLM(config).save_pretrained(str(folder))
    write_bpe_tokenizer(folder, QWEN_SPECIALS, {
        "bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "chat_template": QWEN_CHAT, "errors": "replace", "tokenizer_class": "Qwen2Tokenizer"})
    return folder


def variant(src: Path, dst: Path, config: dict | None = None, drop: str | None = None,
            rename: tuple[str, str] | None = None) -> Path:
    """A copy of checkpoint ``src`` (shards linked, not copied) with config keys changed, a
    shard removed, or one tensor renamed (its shard rewritten)."""
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix == ".safetensors":
            os.symlink(f, dst / f.name)
        else:
            shutil.copy(f, dst / f.name)
    if config:
        cfg = json.loads((src / "config.json").read_text())
        (dst / "config.json").write_text(json.dumps({**cfg, **config}))
    if drop:
        (dst / drop).unlink()
    if rename:
        old, new = rename
        index = json.loads((src / "model.safetensors.index.json").read_text())
        shard = index["weight_map"][old]
        part = load_file(str(src / shard))
        part[new] = part.pop(old)
        (dst / shard).unlink()
        save_file(part, str(dst / shard), metadata={"format": "pt"})
    return dst
