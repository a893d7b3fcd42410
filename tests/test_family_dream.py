"""Dream loaded natively: a random checkpoint in the hub's exact format (Qwen2 key names, 2 bf16
shards with an index, the real special-token ids, 152064 embedding rows), checked against a
hand-written forward of the authors' network and run through every strategy and guide."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from decoding import Coordinator
from decoding.protocols import Denoiser
from experiments.config import build
from models import load_ar, load_denoiser
from models.families.dream import DreamDenoiser
from models.hub import CheckpointError, read_weights
from tests.family_checkpoints import (
    DREAM_ROWS,
    QWEN_FIRST_SPECIAL,
    variant,
    write_dream,
    write_qwen_guide,
)

CONF = Path(__file__).resolve().parent.parent / "conf"
V, MASK = 151666, 151666  # real ids 0..151665 (<|beginoftext|> included), mask <|mask|>


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_dream(tmp_path_factory.mktemp("dream") / "ckpt")


@pytest.fixture(scope="module")
def den(folder):
    return load_denoiser(folder)


@pytest.fixture(scope="module")
def den32(folder):
    return load_denoiser(folder, dtype="float32")


def reference_logits(folder: Path, ids: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """The authors' Dream forward written out (float32): RMSNorm, RoPE on halves, GQA
    attention without a causal mask, SwiGLU MLP, lm_head; raw logits (B, L, rows), unshifted."""
    import json

    cfg = json.loads((folder / "config.json").read_text())
    w = {k: v.float() for k, v in read_weights(folder).items()}
    nh, nkv, eps = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["rms_norm_eps"]
    hd = cfg["hidden_size"] // nh
    B, L = ids.shape
    inv = 1.0 / cfg["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd)
    ang = torch.outer(torch.arange(L).float(), inv)
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

    def rms(v, weight):
        return weight * (v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps))

    def rope(t):
        half = hd // 2
        return t * cos + torch.cat([-t[..., half:], t[..., :half]], -1) * sin

    x = w["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = rms(x, w[p + "input_layernorm.weight"])

        def proj(name, heads, a=a, p=p):
            y = a @ w[p + f"self_attn.{name}.weight"].T + w[p + f"self_attn.{name}.bias"]
            return y.view(B, L, heads, hd).transpose(1, 2)

        q, k, v = rope(proj("q_proj", nh)), rope(proj("k_proj", nkv)), proj("v_proj", nkv)
        k, v = k.repeat_interleave(nh // nkv, 1), v.repeat_interleave(nh // nkv, 1)
        s = q @ k.transpose(-1, -2) / math.sqrt(hd)
        if causal:
            s = s.masked_fill(torch.ones(L, L, dtype=torch.bool).triu(1), -torch.inf)
        o = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, L, -1)
        x = x + o @ w[p + "self_attn.o_proj.weight"].T
        m = rms(x, w[p + "post_attention_layernorm.weight"])
        gate, up = m @ w[p + "mlp.gate_proj.weight"].T, m @ w[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    return rms(x, w["model.norm.weight"]) @ w["lm_head.weight"].T


def _tokens(seed=0, b=2, length=12, masked=0.5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (b, length), generator=g)
    x[torch.rand(b, length, generator=g) < masked] = MASK
    return x


def test_loaded_as_the_protocol_says(den):
    assert isinstance(den, DreamDenoiser) and isinstance(den, Denoiser)
    assert (den.vocab_size, den.mask_id, den.max_length) == (V, MASK, 64)
    assert den.token_space.rows == DREAM_ROWS and den.token_space.trivial  # ids 0..V-1, mask V
    assert den.supports_causal and den.supports_rows and not den.time_conditioned
    tok = den.tokenizer
    assert len(tok) == 151667 and tok.mask_token_id == MASK and tok.eos_token_id == 151643
    assert tok.convert_ids_to_tokens([151644, 151665]) == ["<|im_start|>", "<|beginoftext|>"]
    chat = tok.apply_chat_template([{"role": "user", "content": "hi wo"}], tokenize=False,
                                   add_generation_prompt=True)
    ids = tok(chat, add_special_tokens=False)["input_ids"]
    assert ids[0] == 151644 and 151645 in ids and 257 in ids  # <|im_start|>, <|im_end|>, " wo"
    assert tok.decode(ids) == chat
    assert tok.decode([71, 72, MASK]) == "hi<|mask|>"


def test_bf16_weights_stay_bf16(den, den32):
    assert {p.dtype for p in den.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in den32.parameters()} == {torch.float32}
    assert den.network.model.rotary_emb.inv_freq.dtype == torch.float32
    assert not any(p.requires_grad for p in den.parameters()) and not den.training
    lp = den.log_probs(_tokens(), torch.ones(2))
    assert lp.dtype == torch.float32 and torch.isfinite(lp).all()


def test_shift_matches_the_authors_forward(folder, den32):
    # Duet's row i is the prediction FOR position i: the raw output at i-1 (row 0: itself),
    # restricted to the real ids and normalised.
    x = _tokens()
    raw = reference_logits(folder, x)
    want = torch.log_softmax(torch.cat([raw[:, :1], raw[:, :-1]], 1)[..., :V], -1)
    got = den32.log_probs(x, torch.ones(2))
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)
    assert not torch.allclose(got[:, 1:], torch.log_softmax(raw[:, 1:, :V], -1), atol=1e-2)


def test_bidirectional_and_causal(folder, den32):
    x = _tokens(1)
    j = 6
    x2 = x.clone()
    x2[:, j:] = _tokens(2)[:, j:]
    t = torch.ones(2)
    full, full2 = den32.log_probs(x, t), den32.log_probs(x2, t)
    assert not torch.allclose(full[:, :j], full2[:, :j], atol=1e-3)  # sees the suffix
    c, c2 = den32.log_probs(x, t, causal=True), den32.log_probs(x2, t, causal=True)
    torch.testing.assert_close(c[:, : j + 1], c2[:, : j + 1])  # row j sees x_<j only
    prefix = den32.log_probs(x[:, : j + 1], t, causal=True)  # a forward on the prefix alone
    torch.testing.assert_close(c[:, : j + 1], prefix, atol=1e-5, rtol=1e-5)
    raw = reference_logits(folder, x, causal=True)
    want = torch.log_softmax(torch.cat([raw[:, :1], raw[:, :-1]], 1)[..., :V], -1)
    torch.testing.assert_close(c, want, atol=2e-4, rtol=1e-4)


def test_mask_and_padding_rows_get_no_mass(folder, den):
    x = _tokens(3)
    lp = den.log_probs(x, torch.ones(2))
    assert lp.shape == (2, 12, V)  # the mask (151666) and padding (151667..) are no column
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(2, 12))
    # the raw head would put most of its mass there (the fixture made those rows large)
    raw = reference_logits(folder, x).softmax(-1)
    assert (raw[..., MASK:].sum(-1) > 0.5).float().mean() > 0.5


@pytest.mark.parametrize("causal", [False, True])
def test_rows_equal_the_full_output(den, causal):
    x = _tokens(4)
    rows = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < 0.4
    rows[0, 0] = rows[1, -1] = True  # row 0 (unshifted) and the last row
    full = den.log_probs(x, torch.ones(2), causal=causal)
    packed = den.log_probs(x, torch.ones(2), causal=causal, rows=rows)
    assert packed.shape == (int(rows.sum()), V) and packed.dtype == torch.float32
    torch.testing.assert_close(packed, full[rows])


def test_time_is_ignored_and_mass_is_ideal(den):
    x = _tokens(5)
    a, b = den.log_probs(x, torch.full((2,), 0.9)), den.log_probs(x, 0.2)
    assert torch.equal(a, b)
    rows = x == MASK
    lp, mass = den.log_probs_with_mass(x, torch.full((2,), 0.5), rows=rows)
    assert lp.shape == (int(rows.sum()), V) and mass.shape == x.shape
    assert torch.isinf(mass[~rows]).all() and torch.isfinite(mass[rows]).all()


def test_bad_input_is_refused(den):
    with pytest.raises(ValueError, match="max_length 64"):
        den.log_probs(torch.zeros(1, 65, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match="token ids must lie"):
        den.log_probs(torch.full((1, 4), MASK + 1), 1.0)


def test_missing_shard_wrong_key_wrong_shape(folder, tmp_path):
    shard = "model-00002-of-00002.safetensors"
    with pytest.raises(CheckpointError, match=f"shards that are missing: {shard}"):
        load_denoiser(variant(folder, tmp_path / "a", drop=shard))
    renamed = variant(folder, tmp_path / "b",
                      rename=("model.norm.weight", "model.final_norm.weight"))
    with pytest.raises(CheckpointError, match=r"missing keys: model\.norm\.weight; unexpected "
                                              r"keys: model\.final_norm\.weight"):
        load_denoiser(renamed)
    wide = variant(folder, tmp_path / "c", config={"intermediate_size": 40})
    with pytest.raises(CheckpointError, match=r"model\.layers\.0\.mlp\.gate_proj\.weight: "
                                              r"\(48, 32\) in .*\(40, 32\) expected"):
        load_denoiser(wide)
    other_mask = variant(folder, tmp_path / "d", config={"mask_token_id": 151665})
    with pytest.raises(ValueError, match="mask_token_id 151665, the tokenizer's mask token "
                                         "has id 151666"):
        load_denoiser(other_mask)


def test_unknown_model_type_is_refused(folder, tmp_path):
    odd = variant(folder, tmp_path / "odd", config={"model_type": "Dreamy",
                                                    "architectures": ["DreamyModel"]})
    with pytest.raises(ValueError, match=r"cannot tell which model family.*'Dreamy'.*Known "
                                         r"model_type values: \[.*'Dream'.*'llada'"):
        load_denoiser(odd)


def test_flash_attention_is_refused(folder):
    with pytest.raises(ValueError, match="flash-attention-2"):
        load_denoiser(folder, attn_implementation="flash_attention_2")


def _strategies():
    return sorted((CONF / "strategy").glob("*.yaml"))


@pytest.mark.parametrize("path", _strategies(), ids=lambda p: p.stem)
def test_every_strategy_runs(den, path):
    strategy = build(OmegaConf.load(path), "strategy", {"strategy": path.stem},
                     eos_id=den.tokenizer.eos_token_id)
    prompt = torch.full((8,), MASK)
    prompt[0] = QWEN_FIRST_SPECIAL + 1  # <|im_start|>, clamped
    coord = Coordinator(den, strategy)
    out = coord.generate(2, 8, 4, prompt=prompt, generator=torch.Generator().manual_seed(0))
    again = coord.generate(2, 8, 4, prompt=prompt, generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (2, 8) and ((out.tokens >= 0) & (out.tokens < V)).all()
    assert (out.tokens[:, 0] == prompt[0]).all() and torch.equal(out.tokens, again.tokens)


@pytest.fixture(scope="module")
def paired(den, tmp_path_factory):
    pairing = pytest.importorskip("models.pairing")
    ar = load_ar(write_qwen_guide(tmp_path_factory.mktemp("qwen") / "guide"))
    return pairing.pair_models(den, ar)


GUIDES = {"dcd": ("left_to_right", {}), "dcd_is": ("ancestral", {"num_candidates": 2}),
          "edlm": ("ancestral", {"num_candidates": 2}), "speculative": ("left_to_right", {}),
          "smc": ("ancestral", {"num_particles": 2}), "apd": ("left_to_right", {})}


@pytest.mark.parametrize("name", GUIDES)
def test_guides_with_a_qwen_guide(paired, name):
    den, ar = paired
    assert ar.vocab_size == den.vocab_size == QWEN_FIRST_SPECIAL + 22  # <|beginoftext|> dropped
    node = OmegaConf.load(CONF / "guide" / f"{name}.yaml")
    node.pop("defaults", None)
    strategy_name, settings = GUIDES[name]
    guide = build(OmegaConf.merge(node, settings), "guide", {"guide": name}, ar=lambda: ar)
    strategy = build(OmegaConf.load(CONF / "strategy" / f"{strategy_name}.yaml"), "strategy")
    out = Coordinator(den, strategy, guide).generate(
        2, 6, 3, generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (2, 6) and (out.tokens < ar.vocab_size).all()
    assert out.nfe["denoiser"] >= 1 and out.nfe["ar_tokens"] > 0


@pytest.mark.slow
def test_a_billion_parameter_load_stays_near_the_file_size(tmp_path):
    """~1.15B random parameters in bf16 shards: the loading process's peak RSS (interpreter and
    libraries included, every weight page touched) within 1.3x the weight files."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "family_memory.py"
    spec = importlib.util.spec_from_file_location("family_memory", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    folder = tmp_path / "ckpt"
    size = bench.write_checkpoint(folder)
    rec = bench.measure(folder)
    assert rec["dtypes"] == ["torch.bfloat16"] and rec["param_bytes"] == size
    assert rec["file_bytes"] >= size > 2e9
    assert rec["peak_ratio"] <= 1.3, rec
