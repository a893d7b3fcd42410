"""Masked LMs (BERT, ModernBERT) through transformers' own classes: [CLS] x [SEP] around the
engine's sequence, the special tokens out of the real ids, no shift; strict loading."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from models import load_ar, load_denoiser
from models.families import detect
from models.families.masked_lm import MaskedLMDenoiser
from models.hub import CheckpointError
from models.pairing import pair_models
from tests.adapted_checkpoints import (
    BERT_ROWS,
    BERT_SPECIALS,
    GUIDE_NAMES,
    MODERNBERT_ROWS,
    MODERNBERT_SPECIALS,
    STRATEGY_NAMES,
    _randomise,
    bert_tokenizer,
    check_sample,
    every_guide,
    every_strategy,
    generate,
    write_bert,
    write_modernbert,
)

CLS, SEP, MASK = 101, 102, 103


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    return write_bert(tmp_path_factory.mktemp("bert") / "bert")


@pytest.fixture(scope="module")
def bert(bert_folder):
    return load_denoiser(bert_folder)


def reference(folder):
    from transformers import AutoModelForMaskedLM

    return AutoModelForMaskedLM.from_pretrained(str(folder), attn_implementation="eager").eval()


def inputs(den, seed=0, b=2, length=10):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, den.vocab_size, (b, length), generator=g)
    x[:, 2:6] = den.mask_id
    return x


def wrapped(den, x):
    ids = den.token_space.to_model(x)
    b = x.shape[0]
    return torch.cat([torch.full((b, 1), CLS), ids, torch.full((b, 1), SEP)], 1)


def test_detected_with_the_specials_out_of_the_real_ids(bert_folder, bert):
    assert detect(bert_folder).name == "masked_lm"
    assert isinstance(bert, MaskedLMDenoiser) and not bert.training
    assert bert.vocab_size == BERT_ROWS - len(BERT_SPECIALS) and bert.mask_id == bert.vocab_size
    assert bert.token_space.mask_token == MASK
    assert not set(BERT_SPECIALS) & set(bert.token_space.ids.tolist())
    assert bert._prefix.tolist() == [CLS] and bert._suffix.tolist() == [SEP]
    assert bert.max_length == 40 - 2 and not bert.shift and bert.supports_causal
    tok = bert.tokenizer
    assert tok.mask_token_id == bert.mask_id
    assert tok.encode("w200 [MASK]", add_special_tokens=False) == [200 - 5, bert.mask_id]


def test_marginals_are_the_mlm_head_on_the_real_ids(bert_folder, bert):
    x = inputs(bert)
    lp = bert.log_probs(x, 0.5)
    assert lp.shape == (2, 10, bert.vocab_size) and torch.allclose(lp.exp().sum(-1),
                                                                  torch.ones(2, 10))
    with torch.no_grad():
        raw = reference(bert_folder)(wrapped(bert, x)).logits[:, 1:-1]
    want = torch.log_softmax(raw[..., bert.token_space.ids], -1)
    assert torch.allclose(lp, want, atol=1e-5)
    y = x.clone()
    y[:, 9] = 7
    assert not torch.allclose(bert.log_probs(y, 0.5)[:, 0], lp[:, 0])  # bidirectional


def test_causal_mask_is_prefix_only(bert_folder, bert):
    x = inputs(bert, seed=1)
    lp = bert.log_probs(x, 0.5, causal=True)
    n = x.shape[1] + 2
    tril = torch.full((n, n), torch.finfo(torch.float32).min).triu(1)[None, None]
    with torch.no_grad():
        raw = reference(bert_folder)(wrapped(bert, x), attention_mask=tril).logits[:, 1:-1]
    assert torch.allclose(lp, torch.log_softmax(raw[..., bert.token_space.ids], -1), atol=1e-5)
    for i in (0, 3, 8):
        y = x.clone()
        y[:, i + 1:] = (y[:, i + 1:] + 11) % bert.vocab_size
        assert torch.allclose(bert.log_probs(y, 0.5, causal=True)[:, : i + 1], lp[:, : i + 1],
                              atol=1e-5)


def test_rows_apply_the_output_layer_to_the_asked_rows(bert):
    x = inputs(bert, seed=2)
    rows = x == bert.mask_id
    rows[0, 9] = True
    for causal in (False, True):
        full = bert.log_probs(x, 0.5, causal=causal)
        assert torch.allclose(bert.log_probs(x, 0.5, causal=causal, rows=rows), full[rows],
                              atol=1e-6)


def test_modernbert_sliding_windows_have_no_causal_mode(tmp_path):
    folder = write_modernbert(tmp_path / "modernbert")
    den = load_denoiser(folder)
    assert den.token_space.rows == MODERNBERT_ROWS and den.vocab_size == 50280
    assert den.token_space.mask_token == 50284 and not den.supports_causal
    x = inputs(den, length=12)
    lp = den.log_probs(x, 0.5)
    ids = den.token_space.to_model(x)
    ids = torch.cat([torch.full((2, 1), 50281), ids, torch.full((2, 1), 50282)], 1)
    with torch.no_grad():
        raw = reference(folder)(ids).logits[:, 1:-1]
    assert torch.allclose(lp, torch.log_softmax(raw[..., den.token_space.ids], -1), atol=1e-5)
    rows = x == den.mask_id
    assert torch.allclose(den.log_probs(x, 0.5, rows=rows), lp[rows], atol=1e-6)
    with pytest.raises(ValueError, match="no causal"):
        den.log_probs(x, 0.5, causal=True)
    assert set(MODERNBERT_SPECIALS).isdisjoint(den.token_space.ids.tolist())


def test_stored_dtype_and_a_missing_shard(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=BERT_ROWS, hidden_size=16, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=40)
    model = BertForMaskedLM(config)
    _randomise(model, 3, 0.3)
    folder = tmp_path / "sharded"
    model.to(torch.bfloat16).save_pretrained(str(folder), max_shard_size="500KB")
    bert_tokenizer(folder)
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1 and (folder / "model.safetensors.index.json").exists()
    den = load_denoiser(folder)
    assert den.model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert den.log_probs(inputs(den), 0.5).dtype == torch.float32
    shards[-1].unlink()
    with pytest.raises(CheckpointError, match=shards[-1].name):
        load_denoiser(folder)


@pytest.mark.parametrize("edit, needle", [
    (lambda s: s.pop("bert.encoder.layer.1.output.dense.weight"),
     r"missing keys: bert\.encoder\.layer\.1\.output\.dense\.weight"),
    (lambda s: s.update({"bert.encoder.layer.0.intermediate.dense.bias": torch.zeros(33)}),
     r"bert\.encoder\.layer\.0\.intermediate\.dense\.bias: \(33,\)"),
    (lambda s: s.update({"bert.extra.weight": torch.zeros(2)}), r"unexpected keys: bert\.extra"),
])
def test_strict_errors_name_the_tensor(bert_folder, tmp_path, edit, needle):
    bad = tmp_path / "bad"
    shutil.copytree(bert_folder, bad)
    state = load_file(str(bad / "model.safetensors"))
    assert any("pooler" in k for k in state) and any("seq_relationship" in k for k in state)
    edit(state)
    save_file(state, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=needle):
        load_denoiser(bad)


def test_a_tokenizer_is_required(bert_folder, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(bert_folder, bare)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (bare / f).unlink()
    with pytest.raises(ValueError, match="needs its tokenizer"):
        load_denoiser(bare)
    cfg = json.loads((bare / "config.json").read_text())
    assert cfg["architectures"] == ["BertForMaskedLM"]


def _prompt(den, infill=True):
    prompt = torch.full((12,), den.mask_id)
    prompt[0] = 40
    if infill:
        prompt[7] = 9
    return prompt


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_every_strategy_runs(bert, name):
    prompt = _prompt(bert)
    res = generate(bert, every_strategy(0)[name], prompt)
    check_sample(res, prompt, bert.vocab_size)


@pytest.fixture(scope="module")
def paired(bert, tmp_path_factory):
    """A tiny GPT-2-architecture AR model on BERT's ids ([CLS] as its BOS)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("guide") / "ar"
    model = GPT2LMHeadModel(GPT2Config(vocab_size=BERT_ROWS, n_embd=16, n_layer=1, n_head=2,
                                       n_positions=64, bos_token_id=CLS, eos_token_id=SEP))
    _randomise(model, 5, 0.3)
    model.save_pretrained(str(folder))
    bert_tokenizer(folder)
    return pair_models(bert, load_ar(folder))


@pytest.mark.parametrize("name", GUIDE_NAMES)
def test_every_guide_runs_with_an_ar_guide(paired, name):
    den, ar = paired
    assert den.vocab_size == ar.vocab_size == BERT_ROWS - len(BERT_SPECIALS)
    guide, strategy = every_guide(ar)[name]
    prompt = _prompt(den, infill=False)
    check_sample(generate(den, strategy, prompt, guide=guide), prompt, den.vocab_size)
