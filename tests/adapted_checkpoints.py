"""Random-weight checkpoints in the hub's formats of DiffuGPT, DiffuLLaMA, BD3-LM and masked LMs,
and AR guides saved with the same tokenizers: tiny widths, the real vocabulary sizes, special
and mask tokens at their real ids, the real tensor names, dtypes and (for DiffuLLaMA) shards."""

from __future__ import annotations

import json
from pathlib import Path

import torch

GPT2_ROWS, GPT2_EOS = 50257, 50256
DIFFUGPT_S_MASK = 10541        # diffugpt-s reuses this ordinary GPT-2 token as its mask
DIFFUGPT_M_MASK = 50257        # diffugpt-m adds "[¨M¨]" after GPT-2's vocabulary
LLAMA_ROWS, LLAMA_MASK = 32000, 811
LLAMA_SPECIALS = {0: "<unk>", 1: "<s>", 2: "</s>"}
BERT_ROWS = 30522
BERT_SPECIALS = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
MODERNBERT_ROWS = 50368        # ModernBERT-base: 50280 tokenizer ids + the specials, padded
MODERNBERT_SPECIALS = {50280: "[UNK]", 50281: "[CLS]", 50282: "[SEP]", 50283: "[PAD]",
                       50284: "[MASK]"}


def word(i: int) -> str:
    return f"w{i}"


def write_tokenizer(folder: Path, size: int, specials: dict[int, str], config: dict,
                    unk: str, template: tuple[str, str] | None = None,
                    added: dict[int, str] | None = None) -> None:
    """A word-level tokenizer of ``size`` ids: words ``w<i>`` except the ``specials`` at their
    ids; ``added`` tokens follow at their ids (>= size); ``template``: (cls, sep) wrapped
    around every encoding, as BERT's post-processor does."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors

    vocab = {specials.get(i, word(i)): i for i in range(size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    extra = dict(added or {})
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False)
                            for _, s in sorted({**specials, **extra}.items())])
    assert all(tok.token_to_id(s) == i for i, s in {**specials, **extra}.items())
    if template:
        cls, sep = template
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B {sep}",
            special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    decoder = {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                        "single_word": False, "special": True}
               for i, s in sorted({**specials, **extra}.items())}
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"added_tokens_decoder": decoder, "tokenizer_class": "PreTrainedTokenizerFast",
         **config}, indent=1))


def gpt2_tokenizer(folder: Path, mask: str | None = None, add_mask: str | None = None) -> None:
    """GPT-2's ids (EOS = BOS = UNK = 50256); ``mask`` names an existing token as the mask
    (diffugpt-s), ``add_mask`` appends one at 50257 (diffugpt-m)."""
    config = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
              "unk_token": "<|endoftext|>", "model_max_length": 1024}
    if mask:
        config["mask_token"] = mask
    if add_mask:
        config["mask_token"] = add_mask
    write_tokenizer(folder, GPT2_ROWS, {GPT2_EOS: "<|endoftext|>"}, config, "<|endoftext|>",
                    added={GPT2_ROWS: add_mask} if add_mask else None)


def llama_tokenizer(folder: Path, mask: bool = True) -> None:
    """LLaMA-2's specials (<unk> 0, <s> 1, </s> 2) in 32000 ids; the mask token is the
    ordinary id 811, as DiffuLLaMA's tokenizer names it."""
    config = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "model_max_length": 2048}
    if mask:
        config["mask_token"] = word(LLAMA_MASK)
    write_tokenizer(folder, LLAMA_ROWS, LLAMA_SPECIALS, config, "<unk>")


def bert_tokenizer(folder: Path, size: int = BERT_ROWS, specials=None) -> None:
    specials = specials or BERT_SPECIALS
    names = {v: v for v in specials.values()}
    write_tokenizer(folder, size, specials, {
        "cls_token": names["[CLS]"], "sep_token": "[SEP]", "pad_token": "[PAD]",
        "unk_token": "[UNK]", "mask_token": "[MASK]", "model_max_length": 512},
        "[UNK]", template=("[CLS]", "[SEP]"))


def _randomise(model: torch.nn.Module, seed: int, scale: float = 0.5) -> None:
    """Every parameter drawn afresh (zero-initialised heads would give flat outputs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def save_state(folder: Path, state: dict) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})


def write_shards(folder: Path, state: dict, n_shards: int = 2) -> None:
    """``state`` as ``model-0000k-of-0000n.safetensors`` with the hub's index file."""
    from safetensors.torch import save_file

    keys, weight_map, total = list(state), {}, 0
    for k in range(n_shards):
        name = f"model-{k + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {key: state[key].contiguous() for key in keys[k::n_shards]}
        save_file(part, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
        total += sum(v.numel() * v.element_size() for v in part.values())
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))


# ---- DiffuGPT ---------------------------------------------------------------------------------
def diffugpt_config(rows: int, **over) -> dict:
    """GPT-2's config.json as DiffuGPT's hub repos carry it (tiny widths)."""
    cfg = {"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
           "attn_pdrop": 0.1, "bos_token_id": GPT2_EOS, "embd_pdrop": 0.1,
           "eos_token_id": GPT2_EOS, "initializer_range": 0.02, "layer_norm_epsilon": 1e-05,
           "model_type": "gpt2", "n_ctx": 64, "n_embd": 16, "n_head": 2, "n_inner": None,
           "n_layer": 2, "n_positions": 64, "reorder_and_upcast_attn": False,
           "resid_pdrop": 0.1, "scale_attn_by_inverse_layer_idx": False,
           "scale_attn_weights": True, "summary_activation": None,
           "summary_first_dropout": 0.1, "summary_proj_to_labels": True,
           "summary_type": "cls_index", "summary_use_proj": True,
           "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 512}},
           "torch_dtype": "float32", "transformers_version": "4.44.2", "use_cache": True,
           "vocab_size": rows}
    return {**cfg, **over}


def gpt2_lm(cfg: dict, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config.from_dict(cfg)
    config._attn_implementation = "eager"
    model = GPT2LMHeadModel(config).eval()
    _randomise(model, seed, 0.3)
    return model


def write_diffugpt(folder: Path, size: str = "s", seed: int = 0, tied: bool = True) -> Path:
    """DiffuGPT's DiscreteDiffusionModel state: ``embed_tokens.weight`` (GPT-2's wte),
    ``denoise_model.*`` (the rest of GPT-2's transformer), ``lm_head.weight`` unless tied
    (the tied copy is stored once)."""
    rows = GPT2_ROWS if size == "s" else GPT2_ROWS + 1
    cfg = diffugpt_config(rows)
    model = gpt2_lm(cfg, seed)
    state = {}
    for k, v in model.state_dict().items():
        if k == "transformer.wte.weight":
            state["embed_tokens.weight"] = v
        elif k.startswith("transformer."):
            state["denoise_model." + k.removeprefix("transformer.")] = v
    if not tied:
        state["lm_head.weight"] = torch.randn(rows, cfg["n_embd"],
                                              generator=torch.Generator().manual_seed(seed))
    save_state(folder, state)
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    if size == "s":
        gpt2_tokenizer(folder, mask=word(DIFFUGPT_S_MASK))
    else:
        gpt2_tokenizer(folder, add_mask="[¨M¨]")
    return folder


def write_gpt2_guide(folder: Path, seed: int = 1) -> Path:
    """A random tiny GPT2LMHeadModel with GPT-2's ids (no mask token), saved by transformers."""
    model = gpt2_lm(diffugpt_config(GPT2_ROWS), seed)
    model.save_pretrained(str(folder))
    gpt2_tokenizer(folder)
    return folder


# ---- DiffuLLaMA -------------------------------------------------------------------------------
def llama_config(**over) -> dict:
    cfg = {"architectures": ["LlamaForCausalLM"], "attention_bias": False,
           "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
           "hidden_size": 16, "initializer_range": 0.02, "intermediate_size": 32,
           "max_position_embeddings": 64, "mlp_bias": False, "model_type": "llama",
           "num_attention_heads": 2, "num_hidden_layers": 2, "num_key_value_heads": 2,
           "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None,
           "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
           "transformers_version": "4.44.2", "use_cache": True, "vocab_size": LLAMA_ROWS}
    return {**cfg, **over}


def llama_lm(cfg: dict, seed: int = 0, dtype=torch.bfloat16):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_dict(cfg)
    config._attn_implementation = "eager"
    model = LlamaForCausalLM(config).eval()
    _randomise(model, seed, 0.3)
    return model.to(dtype)


def write_diffullama(folder: Path, seed: int = 0) -> Path:
    """A LlamaForCausalLM checkpoint in bf16, two shards and the index, LLaMA-2's tokenizer ids
    with the mask token at 811."""
    cfg = llama_config()
    folder.mkdir(parents=True, exist_ok=True)
    write_shards(folder, llama_lm(cfg, seed).state_dict())
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    llama_tokenizer(folder)
    return folder


def write_llama_guide(folder: Path, seed: int = 1) -> Path:
    model = llama_lm(llama_config(num_hidden_layers=1), seed, torch.float32)
    model.save_pretrained(str(folder))
    llama_tokenizer(folder, mask=False)
    return folder


# ---- BD3-LM -----------------------------------------------------------------------------------
def bd3lm_config(block_size: int, **over) -> dict:
    """BD3LMConfig as ``push_to_hf.py`` writes it (tiny widths)."""
    name = f"kuleshov-group/bd3lm-owt-block_size{block_size}"
    cfg = {"_name_or_path": name, "adaln": True, "architectures": ["BD3LM"],
           "attn_backend": "flex",
           "auto_map": {"AutoConfig": f"{name}--configuration_bd3lm.BD3LMConfig",
                        "AutoModelForMaskedLM": f"{name}--modeling_bd3lm.BD3LM"},
           "block_size": block_size, "causal": False, "cond_dim": 8, "cross_attn": True,
           "dropout": 0.1, "hidden_dim": 16, "model_length": 32, "model_type": "bd3lm",
           "n_blocks": 2, "n_heads": 2, "return_dict": False, "sampling_eps_max": 0.999,
           "sampling_eps_min": 0.001, "time_conditioning": False, "torch_dtype": "float32",
           "transformers_version": "4.49.0", "var_min": True, "vocab_size": GPT2_ROWS + 1}
    return {**cfg, **over}


def write_bd3lm(folder: Path, block_size: int = 4, seed: int = 0, **over):
    """BD3-LM's hub files; returns (folder, the DDiT whose weights they hold)."""
    from models.ddit.backbone import DDiT, DDiTConfig

    cfg = bd3lm_config(block_size, **over)
    shape = DDiTConfig(vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_dim"],
                       cond_dim=cfg["cond_dim"], n_blocks=cfg["n_blocks"],
                       n_heads=cfg["n_heads"], max_length=cfg["model_length"])
    net = DDiT(shape)
    _randomise(net, seed, 0.3)
    state = {f"backbone.{k}": v for k, v in net.state_dict().items()}
    state["backbone.rotary_emb.inv_freq"] = net.rotary_emb.inv_freq
    state["sampling_eps_min"] = torch.tensor(cfg["sampling_eps_min"])
    state["sampling_eps_max"] = torch.tensor(cfg["sampling_eps_max"])
    save_state(folder, state)
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    gpt2_tokenizer(folder)
    return folder, net


# ---- masked LMs -------------------------------------------------------------------------------
def write_bert(folder: Path, seed: int = 0, dtype=torch.float32) -> Path:
    """A BERT pre-training checkpoint (MLM head + the pooler and next-sentence head a
    ``BertForMaskedLM`` ignores), as ``bert-base-uncased`` is, with BERT's special ids."""
    from transformers import BertConfig, BertForPreTraining

    config = BertConfig(vocab_size=BERT_ROWS, hidden_size=16, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=40, pad_token_id=0)
    model = BertForPreTraining(config)
    _randomise(model, seed, 0.3)
    model.to(dtype).save_pretrained(str(folder))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architectures"] = ["BertForMaskedLM"]
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    bert_tokenizer(folder)
    return folder


def write_modernbert(folder: Path, seed: int = 0) -> Path:
    """A ModernBertForMaskedLM with sliding-window layers and ModernBERT-base's special ids."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    config = ModernBertConfig(vocab_size=MODERNBERT_ROWS, hidden_size=16, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=32,
                              max_position_embeddings=64, local_attention=4,
                              global_attn_every_n_layers=2, pad_token_id=50283,
                              bos_token_id=50281, eos_token_id=50282, cls_token_id=50281,
                              sep_token_id=50282)
    model = ModernBertForMaskedLM(config)
    _randomise(model, seed, 0.3)
    model.save_pretrained(str(folder))
    bert_tokenizer(folder, 50280 + len(MODERNBERT_SPECIALS), MODERNBERT_SPECIALS)
    return folder


# ---- runs -------------------------------------------------------------------------------------
CONF = Path(__file__).resolve().parent.parent / "conf" / "strategy"
STRATEGY_NAMES = sorted(p.stem for p in CONF.glob("*.yaml"))
GUIDE_NAMES = ("apd", "dcd", "dcd_chunked", "edlm", "smc", "speculative")


def every_strategy(eos_id: int) -> dict:
    """Every option of conf/strategy/ built as experiments.run builds it, and Blocks over the
    model's own block length where it has one (set by the caller)."""
    from omegaconf import OmegaConf

    from experiments.config import build

    return {p.stem: build(OmegaConf.load(p), "strategy", {"strategy": p.stem}, eos_id=eos_id)
            for p in sorted(CONF.glob("*.yaml"))}


def generate(den, strategy, prompt: torch.Tensor, steps: int = 4, n: int = 3, guide=None,
             seed: int = 0):
    from decoding import Coordinator

    coord = Coordinator(den, strategy, guide)
    return coord.generate(n, prompt.shape[-1], steps, prompt=prompt,
                          generator=torch.Generator().manual_seed(seed))


def check_sample(res, prompt: torch.Tensor, vocab_size: int, n: int = 3) -> None:
    tokens = res.tokens
    assert tokens.shape == (n, prompt.shape[-1]) and tokens.dtype == torch.long
    assert ((tokens >= 0) & (tokens < vocab_size)).all()
    clamped = prompt < vocab_size
    assert (tokens[:, clamped] == prompt[clamped]).all()


def every_guide(ar) -> dict:
    """The two-model guides with their strategies: (guide, strategy) by name."""
    from copula import CopulaGuide
    from decoding.guides import APDGuide, SMCGuide, SpeculativeGuide
    from decoding.strategies import Ancestral, LeftToRight
    from edlm import EnergyGuide

    return {"dcd": (CopulaGuide(ar), LeftToRight()),
            "dcd_chunked": (CopulaGuide(ar), Ancestral(chunk=2)),
            "edlm": (EnergyGuide(ar, num_candidates=3), Ancestral()),
            "speculative": (SpeculativeGuide(ar, draft_length=3), LeftToRight()),
            "apd": (APDGuide(ar, lookahead=3), LeftToRight()),
            "smc": (SMCGuide(ar, num_particles=2), Ancestral())}
