"""LLaDA loaded natively: random checkpoints in the hub's exact format (``model.transformer.*``
names, 2 bf16 shards with an index, the real special-token ids with the chat tokens above the
mask, 126464 embedding rows), checked against transformers' LLaMA with the weights renamed (a
LLaDA ``llama`` block is a LLaMA block with bidirectional attention) and run through every
strategy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from decoding import Coordinator
from decoding.protocols import Denoiser
from experiments.config import build
from models import load_denoiser
from models.families.llada import LLaDADenoiser, llada_shape
from models.hub import CheckpointError, read_weights
from tests.family_checkpoints import LLADA_ROWS, llada_config, variant, write_llada

CONF = Path(__file__).resolve().parent.parent / "conf"
MODEL_MASK, V = 126336, 126348  # 126349 tokenizer ids less the mask
EOT, START_HEADER = 126348, 126346  # model ids above the mask: engine ids one lower


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_llada(tmp_path_factory.mktemp("llada") / "ckpt")


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    """The fused variant: sequential blocks (att_proj), SwiGLU, q/k/v biases, tied output."""
    return write_llada(tmp_path_factory.mktemp("llada") / "fused", seed=1,
                       block_type="sequential", activation_type="swiglu", mlp_hidden_size=64,
                       include_qkv_bias=True, weight_tying=True, n_kv_heads=4)


@pytest.fixture(scope="module")
def den(folder):
    return load_denoiser(folder)


@pytest.fixture(scope="module")
def den32(folder):
    return load_denoiser(folder, dtype="float32")


def reference_logits(folder: Path, ids: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """transformers' LlamaForCausalLM holding the LLaDA weights (float32), with an explicit
    bidirectional (or lower-triangular) mask: raw logits (B, L, rows) over model ids."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = json.loads((folder / "config.json").read_text())
    w = {k: v.float() for k, v in read_weights(folder, prefix="model.transformer.").items()}
    d, nh = cfg["d_model"], cfg["n_heads"]
    swiglu, tied = cfg["activation_type"] == "swiglu", cfg["weight_tying"]
    inner = cfg["mlp_hidden_size"] // 2 if swiglu else cfg["mlp_hidden_size"]
    qkv_bias = cfg["include_qkv_bias"]
    config = LlamaConfig(vocab_size=cfg["embedding_size"], hidden_size=d,
                         intermediate_size=inner, num_hidden_layers=cfg["n_layers"],
                         num_attention_heads=nh, num_key_value_heads=cfg["n_kv_heads"],
                         head_dim=d // nh, rms_norm_eps=cfg["rms_norm_eps"],
                         rope_theta=cfg["rope_theta"], max_position_embeddings=64,
                         attention_bias=qkv_bias, tie_word_embeddings=tied)
    config._attn_implementation = "eager"
    model = LlamaForCausalLM(config).eval()
    s = {"model.embed_tokens.weight": w["wte.weight"], "model.norm.weight": w["ln_f.weight"],
         "lm_head.weight": w["wte.weight" if tied else "ff_out.weight"]}
    kv = cfg["n_kv_heads"] * d // nh
    for i in range(cfg["n_layers"]):
        b, p = f"blocks.{i}.", f"model.layers.{i}."
        if cfg["block_type"] == "llama":
            q, k, v = (w[b + f"{n}_proj.weight"] for n in "qkv")
        else:
            q, k, v = w[b + "att_proj.weight"].split((d, kv, kv))
            if qkv_bias:
                for n, bias in zip("qkv", w[b + "att_proj.bias"].split((d, kv, kv))):
                    s[p + f"self_attn.{n}_proj.bias"] = bias
                s[p + "self_attn.o_proj.bias"] = torch.zeros(d)
        if swiglu:  # SwiGLU: value first, gate second, from the one ff_proj
            up, gate = w[b + "ff_proj.weight"].chunk(2)
        else:
            up, gate = w[b + "up_proj.weight"], w[b + "ff_proj.weight"]
        s.update({p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k,
                  p + "self_attn.v_proj.weight": v, p + "self_attn.o_proj.weight":
                  w[b + "attn_out.weight"], p + "mlp.gate_proj.weight": gate,
                  p + "mlp.up_proj.weight": up, p + "mlp.down_proj.weight": w[b + "ff_out.weight"],
                  p + "input_layernorm.weight": w[b + "attn_norm.weight"],
                  p + "post_attention_layernorm.weight": w[b + "ff_norm.weight"]})
    model.load_state_dict(s, strict=True)
    L = ids.shape[1]
    mask = torch.zeros(1, 1, L, L)
    if causal:
        mask = mask.masked_fill(torch.ones(L, L, dtype=torch.bool).triu(1), -torch.inf)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def _tokens(den, seed=0, b=2, length=12, masked=0.5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, den.vocab_size, (b, length), generator=g)
    x[:, :3] = torch.tensor([V - 1, V - 2, V - 3])  # engine ids of the chat tokens
    x[torch.rand(b, length, generator=g) < masked] = den.mask_id
    return x


def _expected(den, folder, x, causal=False):
    raw = reference_logits(folder, den.token_space.to_model(x), causal)
    return torch.log_softmax(raw[..., den.token_space.ids], -1)


def test_loaded_as_the_protocol_says(den):
    assert isinstance(den, LLaDADenoiser) and isinstance(den, Denoiser)
    assert (den.vocab_size, den.mask_id, den.max_length) == (V, V, 64)
    space = den.token_space
    assert (space.rows, space.mask_token, space.identity) == (LLADA_ROWS, MODEL_MASK, False)
    assert den.supports_causal and den.supports_rows and not den.time_conditioned
    assert {p.dtype for p in den.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in den.parameters()) and not den.training


def test_token_space_maps_the_chat_tokens_above_the_mask(den):
    space, tok = den.token_space, den.tokenizer
    engine = torch.tensor([0, MODEL_MASK - 1, MODEL_MASK, START_HEADER - 1, EOT - 1, V])
    model = torch.tensor([0, MODEL_MASK - 1, MODEL_MASK + 1, START_HEADER, EOT, MODEL_MASK])
    assert torch.equal(space.to_model(engine), model)
    assert torch.equal(space.to_engine(model), engine)
    with pytest.raises(ValueError, match="not real tokens"):
        space.to_engine(torch.tensor([LLADA_ROWS - 1]))  # a padding row
    assert len(tok) == V and tok.mask_token_id == V and tok.eos_token_id == EOT - 1
    assert tok.encode("w5 <|mdm_mask|> <|eot_id|>", add_special_tokens=False) == [5, V, EOT - 1]
    chat = tok.apply_chat_template([{"role": "user", "content": "w7"}], tokenize=False,
                                   add_generation_prompt=True)
    ids = tok.encode(chat, add_special_tokens=False)
    assert ids[:2] == [126080, START_HEADER - 1] and EOT - 1 in ids
    raw = tok.tokenizer.encode(chat, add_special_tokens=False)  # the model's own ids
    assert ids == space.to_engine(torch.tensor(raw)).tolist() and EOT in raw
    assert tok.decode(ids) == tok.tokenizer.decode(raw)
    assert tok.convert_ids_to_tokens(EOT - 1) == "<|eot_id|>"


@pytest.mark.parametrize("which", ["llama", "fused"])
def test_matches_transformers_llama(which, folder, fused, den32):
    src = folder if which == "llama" else fused
    model = den32 if which == "llama" else load_denoiser(fused, dtype="float32")
    x = _tokens(model)
    got = model.log_probs(x, torch.ones(2))  # no shift: row i is the output at i
    torch.testing.assert_close(got, _expected(model, src, x), atol=2e-4, rtol=1e-4)


def test_bidirectional_and_causal(folder, den32):
    x = _tokens(den32, 1)
    j = 6
    x2 = x.clone()
    x2[:, j + 1:] = _tokens(den32, 2)[:, j + 1:]
    t = torch.ones(2)
    full, full2 = den32.log_probs(x, t), den32.log_probs(x2, t)
    assert not torch.allclose(full[:, : j + 1], full2[:, : j + 1], atol=1e-3)
    c, c2 = den32.log_probs(x, t, causal=True), den32.log_probs(x2, t, causal=True)
    torch.testing.assert_close(c[:, : j + 1], c2[:, : j + 1])  # row i sees x_<=i only
    prefix = den32.log_probs(x[:, : j + 1], t, causal=True)
    torch.testing.assert_close(c[:, : j + 1], prefix, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c, _expected(den32, folder, x, causal=True), atol=2e-4,
                               rtol=1e-4)


def test_mask_and_padding_rows_get_no_mass(folder, den):
    x = _tokens(den, 3)
    lp = den.log_probs(x, torch.ones(2))
    assert lp.shape == (2, 12, V)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(2, 12))
    raw = reference_logits(folder, den.token_space.to_model(x)).softmax(-1)
    excluded = torch.ones(LLADA_ROWS, dtype=torch.bool)
    excluded[den.token_space.ids] = False
    assert raw[..., excluded].sum(-1).mean() > 0.3  # what the raw head would have put there


@pytest.mark.parametrize("causal", [False, True])
def test_rows_equal_the_full_output(den, causal):
    x = _tokens(den, 4)
    rows = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < 0.4
    rows[0, 0] = True
    full = den.log_probs(x, torch.ones(2), causal=causal)
    packed = den.log_probs(x, torch.ones(2), causal=causal, rows=rows)
    assert packed.shape == (int(rows.sum()), V) and packed.dtype == torch.float32
    torch.testing.assert_close(packed, full[rows])


def test_time_is_ignored(den):
    x = _tokens(den, 5)
    assert torch.equal(den.log_probs(x, 0.9), den.log_probs(x, torch.full((2,), 0.1)))


def test_missing_shard_wrong_key_wrong_shape(folder, tmp_path):
    shard = "model-00001-of-00002.safetensors"
    with pytest.raises(CheckpointError, match=f"shards that are missing: {shard}"):
        load_denoiser(variant(folder, tmp_path / "a", drop=shard))
    old = "model.transformer.blocks.1.attn_out.weight"
    renamed = variant(folder, tmp_path / "b", rename=(old, old.replace("attn_out", "o_proj")))
    with pytest.raises(CheckpointError, match=r"missing keys: model\.transformer\.blocks\.1\."
                                              r"attn_out\.weight; unexpected keys: .*o_proj"):
        load_denoiser(renamed)
    wide = variant(folder, tmp_path / "c", config={"mlp_hidden_size": 40})
    with pytest.raises(CheckpointError, match=r"blocks\.0\.ff_proj\.weight: \(48, 32\) in .*"
                                              r"\(40, 32\) expected"):
        load_denoiser(wide)
    tied = variant(folder, tmp_path / "d", config={"weight_tying": True})
    with pytest.raises(CheckpointError, match=r"unexpected keys: model\.transformer\.ff_out"):
        load_denoiser(tied)


@pytest.mark.parametrize("change, match", [
    ({"rope": False}, "RoPE"), ({"alibi": True}, "RoPE"),
    ({"block_group_size": 2}, "block_group_size"),
    ({"activation_type": "swiglu"}, "up_proj"), ({"block_type": "parallel"}, "block_type"),
    ({"n_kv_heads": 3}, "divide"),
])
def test_config_it_cannot_build_is_refused(change, match):
    with pytest.raises(ValueError, match=match):
        llada_shape(llada_config(**change))


def test_omitted_keys_take_the_authors_defaults():
    cfg = {k: v for k, v in llada_config().items()
           if k not in ("n_kv_heads", "block_type", "activation_type", "layer_norm_type",
                        "weight_tying", "mlp_hidden_size")}
    shape = llada_shape(cfg)
    assert (shape.n_kv_heads, shape.block_type, shape.activation_type) == (4, "sequential",
                                                                           "swiglu")
    assert (shape.layer_norm_type, shape.weight_tying, shape.mlp_hidden_size) == ("default",
                                                                                  True, 128)


@pytest.mark.parametrize("path", sorted((CONF / "strategy").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_strategy_runs(den, path):
    strategy = build(OmegaConf.load(path), "strategy", {"strategy": path.stem},
                     eos_id=den.tokenizer.eos_token_id)
    prompt = torch.full((8,), den.mask_id)
    prompt[:2] = torch.tensor([126080, START_HEADER - 1])  # clamped, one above the mask
    coord = Coordinator(den, strategy)
    out = coord.generate(2, 8, 4, prompt=prompt, generator=torch.Generator().manual_seed(0))
    again = coord.generate(2, 8, 4, prompt=prompt, generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (2, 8) and ((out.tokens >= 0) & (out.tokens < V)).all()
    assert (out.tokens[:, :2] == prompt[:2]).all() and torch.equal(out.tokens, again.tokens)
