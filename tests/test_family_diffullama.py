"""DiffuLLaMA: a plain LlamaForCausalLM checkpoint (bf16 shards + index) made bidirectional on
transformers' own LLaMA, shifted logits, LLaMA-2's token 811 as the mask; chosen by name."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import models.families as families
from models import load_ar, load_denoiser
from models.families import detect
from models.families.diffullama import DiffuLLaMADenoiser
from models.hub import CheckpointError
from models.pairing import pair_models
from tests.adapted_checkpoints import (
    GUIDE_NAMES,
    LLAMA_MASK,
    LLAMA_ROWS,
    STRATEGY_NAMES,
    check_sample,
    every_guide,
    every_strategy,
    generate,
    llama_tokenizer,
    write_diffullama,
    write_llama_guide,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_diffullama(tmp_path_factory.mktemp("diffullama") / "ckpt")


@pytest.fixture(scope="module")
def den(folder):
    return load_denoiser(folder, family="diffullama")


@pytest.fixture(scope="module")
def den32(folder):
    return load_denoiser(folder, family="diffullama", dtype="float32")


def reference(folder):
    """transformers' own LlamaForCausalLM reading the same folder (float32, eager)."""
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32,
                                            attn_implementation="eager").eval()


def inputs(den, seed=0, b=2, length=10):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, den.vocab_size, (b, length), generator=g)
    x[:, 3:7] = den.mask_id
    return x


def expected(den, raw):
    shifted = torch.cat([raw[:, :1], raw[:, :-1]], dim=1)
    return torch.log_softmax(shifted.float()[..., den.token_space.ids], dim=-1)


def test_a_llama_config_is_not_claimed_but_loads_by_name_or_hub_id(folder, den, monkeypatch):
    with pytest.raises(ValueError, match="cannot tell"):
        detect(folder)
    assert isinstance(den, DiffuLLaMADenoiser) and not den.training
    with pytest.raises(ValueError, match="no denoiser family named 'diffulama'"):
        load_denoiser(folder, family="diffulama")
    monkeypatch.setattr(families, "resolve_folder", lambda name: folder)
    assert isinstance(load_denoiser("diffusionfamily/diffullama"), DiffuLLaMADenoiser)


def test_bf16_shards_load_into_bf16_with_811_out_of_the_real_ids(den):
    assert den.net.model.embed_tokens.weight.dtype == torch.bfloat16
    assert den.net.lm_head.weight.dtype == torch.bfloat16 and not den.net.tied
    assert den.net.model.rotary_emb.inv_freq.dtype == torch.float32
    assert den.token_space.mask_token == LLAMA_MASK and den.token_space.rows == LLAMA_ROWS
    assert den.vocab_size == LLAMA_ROWS - 1 and den.mask_id == LLAMA_ROWS - 1
    assert LLAMA_MASK not in den.token_space.ids.tolist()
    assert den.max_length == 64 and den.shift
    tok = den.tokenizer
    assert (tok.bos_token_id, tok.eos_token_id, tok.mask_token_id) == (1, 2, den.mask_id)
    assert tok.encode("w812", add_special_tokens=False) == [811]  # ids above 811 move down
    lp = den.log_probs(inputs(den), 0.5)
    assert lp.dtype == torch.float32 and torch.isfinite(lp).all()


def test_shift_mask_and_bidirectional_attention_against_llama(folder, den, den32):
    x = inputs(den32)
    lp = den32.log_probs(x, 0.7)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2, 10))
    ids = den32.token_space.to_model(x)
    assert (ids[:, 3:7] == LLAMA_MASK).all()
    with torch.no_grad():
        raw = reference(folder)(ids, attention_mask=torch.zeros(1, 1, 10, 10)).logits
    assert torch.allclose(lp, expected(den32, raw), atol=1e-4)
    y = x.clone()
    y[:, 9] = (y[:, 9] + 1) % den32.vocab_size
    assert not torch.allclose(den32.log_probs(y, 0.7)[:, 1], lp[:, 1])
    # bf16 weights give the same marginals up to bf16 rounding
    assert (den.log_probs(x, 0.7) - lp).abs().max() < 0.5


def test_causal_is_llamas_own_causal_forward_and_prefix_only(folder, den32):
    x = inputs(den32, seed=1)
    lp = den32.log_probs(x, 0.5, causal=True)
    with torch.no_grad():
        raw = reference(folder)(den32.token_space.to_model(x)).logits  # LLaMA's own: causal
    assert torch.allclose(lp, expected(den32, raw), atol=1e-4)
    for i in (1, 4, 9):
        y = x.clone()
        y[:, i:] = (y[:, i:] + 5) % den32.vocab_size
        assert torch.allclose(den32.log_probs(y, 0.5, causal=True)[:, i], lp[:, i], atol=1e-5)


def test_rows_are_the_full_outputs_rows(den):
    x = inputs(den, seed=2)
    rows = x == den.mask_id
    rows[1, 0] = rows[0, 9] = True
    for causal in (False, True):
        full = den.log_probs(x, 0.4, causal=causal)
        assert torch.allclose(den.log_probs(x, 0.4, causal=causal, rows=rows), full[rows],
                              atol=1e-6)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_a_missing_shard_is_named(folder, tmp_path):
    bad = _copy(folder, tmp_path / "bad")
    (bad / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors"):
        load_denoiser(bad, family="diffullama")


@pytest.mark.parametrize("key, new, needle", [
    ("model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.upp_proj.weight",
     r"missing keys: model\.layers\.1\.mlp\.up_proj\.weight; unexpected keys: "
     r"model\.layers\.1\.mlp\.upp_proj\.weight"),
    ("model.norm.weight", None, r"model\.norm\.weight: \(15,\) in DiffuLLaMA checkpoint"),
])
def test_wrong_key_or_shape_is_named(folder, tmp_path, key, new, needle):
    bad = _copy(folder, tmp_path / "bad")
    index = json.loads((bad / "model.safetensors.index.json").read_text())
    shard = index["weight_map"][key]
    part = load_file(str(bad / shard))
    if new is None:
        part[key] = part[key][:15].clone()
    else:
        part[new] = part.pop(key)
        index["weight_map"][new] = index["weight_map"].pop(key)
        (bad / "model.safetensors.index.json").write_text(json.dumps(index))
    save_file(part, str(bad / shard))
    with pytest.raises(CheckpointError, match=needle):
        load_denoiser(bad, family="diffullama")


def test_other_configs_and_a_tokenizer_without_mask_are_refused(folder, tmp_path):
    other = _copy(folder, tmp_path / "other")
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "model_type": "mistral"}))
    with pytest.raises(CheckpointError, match="model_type 'llama'"):
        load_denoiser(other, family="diffullama")
    nomask = _copy(folder, tmp_path / "nomask")
    llama_tokenizer(nomask, mask=False)
    with pytest.raises(ValueError, match="mask_id="):
        load_denoiser(nomask, family="diffullama")
    assert load_denoiser(nomask, family="diffullama", mask_id=LLAMA_MASK).vocab_size == 31999


def _prompt(den, infill=True):
    prompt = torch.full((12,), den.mask_id)
    prompt[0] = den.tokenizer.bos_token_id
    if infill:
        prompt[7] = 9
    return prompt


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_every_strategy_runs(den, name):
    prompt = _prompt(den)
    res = generate(den, every_strategy(den.tokenizer.eos_token_id)[name], prompt)
    check_sample(res, prompt, den.vocab_size)


@pytest.fixture(scope="module")
def paired(den, tmp_path_factory):
    ar = load_ar(write_llama_guide(tmp_path_factory.mktemp("guide") / "llama"))
    return pair_models(den, ar)


@pytest.mark.parametrize("name", GUIDE_NAMES)
def test_every_guide_runs_with_a_llama_guide(paired, name):
    den, ar = paired
    assert den.vocab_size == ar.vocab_size == LLAMA_ROWS - 1  # the guide loses 811
    guide, strategy = every_guide(ar)[name]
    prompt = _prompt(den, infill=False)
    check_sample(generate(den, strategy, prompt, guide=guide), prompt, den.vocab_size)
