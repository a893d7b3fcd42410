"""DiffuGPT: the hub layout (embed_tokens / denoise_model.* / tied lm_head) loaded natively,
bidirectional attention, shifted logits, the mask out of the real ids; strategies and guides."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from models import load_ar, load_denoiser
from models.families import detect
from models.families.diffugpt import DiffuGPTDenoiser
from models.hub import CheckpointError
from models.pairing import pair_models
from tests.adapted_checkpoints import (
    DIFFUGPT_M_MASK,
    DIFFUGPT_S_MASK,
    GPT2_EOS,
    GPT2_ROWS,
    GUIDE_NAMES,
    STRATEGY_NAMES,
    check_sample,
    diffugpt_config,
    every_guide,
    every_strategy,
    generate,
    gpt2_lm,
    gpt2_tokenizer,
    save_state,
    write_diffugpt,
    write_gpt2_guide,
)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return write_diffugpt(tmp_path_factory.mktemp("diffugpt") / "s", "s")


@pytest.fixture(scope="module")
def den(small):
    return load_denoiser(small)


def reference(folder, attn="eager"):
    """A function ids, mask -> raw logits: GPT-2's transformer holding the checkpoint's weights
    (the names mapped back by hand) and the checkpoint's head (the embedding when tied)."""
    cfg = json.loads((folder / "config.json").read_text())
    model = gpt2_lm(cfg)
    state = load_file(str(folder / "model.safetensors"))
    mapped = {"wte.weight": state["embed_tokens.weight"]}
    mapped |= {k.removeprefix("denoise_model."): v for k, v in state.items()
               if k.startswith("denoise_model.")}
    model.transformer.load_state_dict(mapped, strict=True)
    model.config._attn_implementation = attn
    head = state.get("lm_head.weight", state["embed_tokens.weight"])

    def logits(ids, attention_mask=None):
        with torch.no_grad():
            h = model.transformer(ids, attention_mask=attention_mask).last_hidden_state
        return h @ head.t()

    return logits


def inputs(den, seed=0, b=2, length=10):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, den.vocab_size, (b, length), generator=g)
    x[:, 4:8] = den.mask_id
    return x


def expected(den, model_logits):
    """Row i = the raw output at i-1 (row 0: at 0), on the real ids, normalised."""
    shifted = torch.cat([model_logits[:, :1], model_logits[:, :-1]], dim=1)
    return torch.log_softmax(shifted[..., den.token_space.ids], dim=-1)


def test_detected_and_loaded_with_the_mask_out_of_the_real_ids(small, den):
    assert detect(small).name == "diffugpt"
    assert isinstance(den, DiffuGPTDenoiser) and not den.training
    assert den.token_space.mask_token == DIFFUGPT_S_MASK
    assert den.vocab_size == GPT2_ROWS - 1 and den.mask_id == GPT2_ROWS - 1
    assert DIFFUGPT_S_MASK not in den.token_space.ids.tolist()
    assert den.max_length == 64 and den.shift and den.supports_causal and den.supports_rows
    assert den.net.embed_tokens.weight.dtype == torch.float32 and den.net.tied
    # The engine's tokenizer: GPT-2's EOS moves down by one (10541 is gone), the mask is V.
    assert den.tokenizer.mask_token_id == den.mask_id
    assert den.tokenizer.eos_token_id == GPT2_EOS - 1
    assert den.tokenizer.decode([GPT2_EOS - 1]) == "<|endoftext|>"
    assert den.tokenizer.encode(f"w{DIFFUGPT_S_MASK}") == [den.mask_id]


def test_shift_mask_and_bidirectional_attention_against_gpt2(small, den):
    x = inputs(den)
    lp = den.log_probs(x, torch.tensor([0.5, 0.9]))
    assert lp.shape == (2, 10, den.vocab_size) and lp.dtype == torch.float32
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2, 10))
    ids = den.token_space.to_model(x)
    assert (ids[:, 4:8] == DIFFUGPT_S_MASK).all()
    # eager attention, an explicit all-zero mask: full attention
    raw = reference(small)(ids, attention_mask=torch.zeros(1, 1, 10, 10))
    assert torch.allclose(lp, expected(den, raw), atol=1e-5)
    # Bidirectional: a later token changes an earlier row.
    y = x.clone()
    y[:, 9] = (y[:, 9] + 1) % den.vocab_size
    assert not torch.allclose(den.log_probs(y, 0.5)[:, 2], lp[:, 2])
    # The kernels agree.
    eager = load_denoiser(small, attn_implementation="eager")
    assert torch.allclose(eager.log_probs(x, 0.5), lp, atol=1e-5)


def test_causal_is_gpt2s_own_causal_forward_and_prefix_only(small, den):
    x = inputs(den, seed=1)
    lp = den.log_probs(x, 0.5, causal=True)
    raw = reference(small, "sdpa")(den.token_space.to_model(x))  # GPT-2's own: causal
    assert torch.allclose(lp, expected(den, raw), atol=1e-5)
    for i in range(1, 10):  # row i sees x[:, :i] only
        y = x.clone()
        y[:, i:] = (y[:, i:] + 3) % den.vocab_size
        assert torch.allclose(den.log_probs(y, 0.5, causal=True)[:, i], lp[:, i], atol=1e-5)
        assert torch.allclose(den.log_probs(x[:, :i + 1], 0.5, causal=True), lp[:, :i + 1],
                              atol=1e-5)


def test_rows_are_the_full_outputs_rows(den):
    x = inputs(den, seed=2)
    rows = x == den.mask_id
    rows[0, 0] = True
    full = den.log_probs(x, 0.3)
    for causal in (False, True):
        want = den.log_probs(x, 0.3, causal=causal)[rows]
        assert torch.allclose(den.log_probs(x, 0.3, causal=causal, rows=rows), want, atol=1e-6)
    lp, mass = den.log_probs_with_mass(x, torch.tensor([0.3, 0.3]), rows=rows)
    assert torch.allclose(lp, full[rows], atol=1e-6)
    assert torch.isinf(mass[~rows]).all() and torch.isfinite(mass[rows]).all()


def test_medium_adds_its_mask_after_gpt2s_ids(tmp_path):
    folder = write_diffugpt(tmp_path / "m", "m")
    den = load_denoiser(folder)
    assert den.token_space.rows == GPT2_ROWS + 1 and den.token_space.trivial
    assert den.vocab_size == GPT2_ROWS and den.mask_id == DIFFUGPT_M_MASK
    assert den.tokenizer.eos_token_id == GPT2_EOS
    x = inputs(den)
    raw = reference(folder)(x, attention_mask=torch.zeros(1, 1, 10, 10))
    assert torch.allclose(den.log_probs(x, 0.5), expected(den, raw), atol=1e-5)


def test_untied_head_and_bf16_weights(tmp_path):
    folder = write_diffugpt(tmp_path / "untied", "s", tied=False)
    den = load_denoiser(folder)
    assert not den.net.tied and den.net.lm_head.weight.shape == (GPT2_ROWS, 16)
    x = inputs(den)
    raw = reference(folder)(den.token_space.to_model(x), torch.zeros(1, 1, 10, 10))
    assert torch.allclose(den.log_probs(x, 0.5), expected(den, raw), atol=1e-5)
    state = load_file(str(folder / "model.safetensors"))
    save_state(folder, {k: v.to(torch.bfloat16) for k, v in state.items()})
    half = load_denoiser(folder)
    assert half.net.embed_tokens.weight.dtype == torch.bfloat16
    assert half.log_probs(x, 0.5).dtype == torch.float32
    assert load_denoiser(folder, dtype="float32").net.lm_head.weight.dtype == torch.float32


@pytest.mark.parametrize("edit, needle", [
    (lambda s: s.update({"denoise_model.h.0.mlp.c_fc.weigth": s.pop(
        "denoise_model.h.0.mlp.c_fc.weight")}), r"missing keys: denoise_model\.h\.0\.mlp\.c_fc"
     r"\.weight; unexpected keys: denoise_model\.h\.0\.mlp\.c_fc\.weigth"),
    (lambda s: s.update({"denoise_model.ln_f.bias": torch.zeros(17)}),
     r"denoise_model\.ln_f\.bias: \(17,\)"),
    (lambda s: s.update({"transformer.h.0.ln_1.weight": s.pop("denoise_model.h.0.ln_1.weight")}),
     r"unexpected keys: transformer\.h\.0\.ln_1\.weight"),
])
def test_strict_errors_name_the_tensor(small, tmp_path, edit, needle):
    state = load_file(str(small / "model.safetensors"))
    edit(state)
    bad = tmp_path / "bad"
    save_state(bad, state)
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (bad / f).write_bytes((small / f).read_bytes())
    with pytest.raises(CheckpointError, match=needle):
        load_denoiser(bad)


def test_plain_gpt2_and_missing_mask_are_refused(small, tmp_path):
    plain = tmp_path / "gpt2"
    gpt2_lm(diffugpt_config(GPT2_ROWS)).save_pretrained(str(plain))
    with pytest.raises(CheckpointError, match="load_ar"):
        load_denoiser(plain)
    nomask = tmp_path / "nomask"
    save_state(nomask, load_file(str(small / "model.safetensors")))
    (nomask / "config.json").write_bytes((small / "config.json").read_bytes())
    gpt2_tokenizer(nomask)
    with pytest.raises(ValueError, match="mask_id="):
        load_denoiser(nomask)
    den = load_denoiser(nomask, mask_id=DIFFUGPT_S_MASK)
    assert den.token_space.mask_token == DIFFUGPT_S_MASK


PROMPT_LEN = 12


def _prompt(den, infill=True):
    prompt = torch.full((PROMPT_LEN,), den.mask_id)
    prompt[0] = den.tokenizer.eos_token_id  # GPT-2's BOS: row 0 has no predecessor
    if infill:
        prompt[6] = 5
    return prompt


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_every_strategy_runs(den, name):
    strategy = every_strategy(den.tokenizer.eos_token_id)[name]
    prompt = _prompt(den)
    res = generate(den, strategy, prompt)
    check_sample(res, prompt, den.vocab_size)


@pytest.fixture(scope="module")
def paired(den, tmp_path_factory):
    ar = load_ar(write_gpt2_guide(tmp_path_factory.mktemp("guide") / "gpt2"))
    return pair_models(den, ar)


@pytest.mark.parametrize("name", GUIDE_NAMES)
def test_every_guide_runs_with_a_gpt2_guide(paired, name):
    den, ar = paired
    assert den.vocab_size == ar.vocab_size == GPT2_ROWS - 1  # GPT-2 loses 10541 (the mask)
    guide, strategy = every_guide(ar)[name]
    prompt = _prompt(den, infill=False)  # the left-to-right guides take a prefix prompt
    res = generate(den, strategy, prompt, guide=guide)
    check_sample(res, prompt, den.vocab_size)
