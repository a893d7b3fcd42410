"""BD3-LM: the hub files (model_type bd3lm, backbone.* DDiT keys, var_min scalars) on Duet's DDiT
with the block-causal attention of the authors' sampling mode; SUBS output, mask 50257."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from decoding.strategies import Blocks
from models import load_ar, load_denoiser
from models.families import detect
from models.families.bd3lm import BD3LMDenoiser, block_causal_mask
from models.hub import CheckpointError
from models.pairing import pair_models
from tests.adapted_checkpoints import (
    GPT2_EOS,
    GPT2_ROWS,
    GUIDE_NAMES,
    STRATEGY_NAMES,
    check_sample,
    every_guide,
    every_strategy,
    generate,
    save_state,
    write_bd3lm,
    write_gpt2_guide,
)

B = 4  # block size


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return write_bd3lm(tmp_path_factory.mktemp("bd3lm") / "bs4", B)


@pytest.fixture(scope="module")
def den(written):
    return load_denoiser(written[0])


def inputs(den, seed=0, b=2, length=14):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, den.vocab_size, (b, length), generator=g)
    x[:, 5:7] = x[:, 9:12] = den.mask_id
    return x


def authors_sampling_mask(n: int, block_size: int) -> torch.Tensor:
    """modeling_bd3lm's block_diff_mask over [x_t, x_0] (2n positions), cut as its sampling
    mode cuts it (``mask[n:n+L, n:n+L]``): the x0 quadrant."""
    q, kv = torch.arange(2 * n)[:, None], torch.arange(2 * n)[None, :]
    x0_q, x0_kv = q >= n, kv >= n
    bq = torch.where(x0_q, (q - n) // block_size, q // block_size)
    bkv = torch.where(x0_kv, (kv - n) // block_size, kv // block_size)
    diagonal = (bq == bkv) & (x0_q == x0_kv)
    offset = (bq > bkv) & x0_kv & ~x0_q
    causal = (bq >= bkv) & x0_kv & x0_q
    return (diagonal | offset | causal)[n:, n:]


def test_detected_and_loaded(written, den):
    folder, _ = written
    assert detect(folder).name == "bd3lm"
    assert isinstance(den, BD3LMDenoiser) and not den.training and den.block_size == B
    assert den.vocab_size == GPT2_ROWS and den.mask_id == GPT2_ROWS  # 50257 = vocab_size - 1
    assert den.token_space.trivial and den.max_length == 32 and not den.shift
    assert not den.time_conditioned and den.supports_causal and den.supports_rows
    assert den.backbone.rotary_emb.inv_freq.dtype == torch.float32
    assert den.tokenizer.eos_token_id == GPT2_EOS


@pytest.mark.parametrize("length", [8, 14, 32])
def test_block_mask_is_the_authors_sampling_mask(length):
    assert torch.equal(block_causal_mask(length, B), authors_sampling_mask(length, B))


def test_subs_output_with_zero_noise_input_matches_the_written_network(written, den):
    _, net = written
    x = inputs(den)
    lp = den.log_probs(x, torch.tensor([0.2, 0.9]))
    assert lp.shape == (2, 14, GPT2_ROWS) and torch.allclose(lp.exp().sum(-1), torch.ones(2, 14))
    with torch.no_grad():  # time_conditioning false: the authors zero sigma
        raw = net(x, torch.zeros(2), attn_mask=block_causal_mask(14, B))
    assert torch.allclose(lp, torch.log_softmax(raw[..., :GPT2_ROWS], -1), atol=1e-5)
    assert torch.allclose(den.log_probs(x, 0.5), den.log_probs(x, 0.01), atol=1e-6)
    timed = load_denoiser(written[0], time_conditioning=True)
    sigma = -torch.log1p(-(1 - 1e-3) * torch.tensor([0.2, 0.9]))
    with torch.no_grad():
        raw = net(x, sigma, attn_mask=block_causal_mask(14, B))
    assert torch.allclose(timed.log_probs(x, torch.tensor([0.2, 0.9])),
                          torch.log_softmax(raw[..., :GPT2_ROWS], -1), atol=1e-5)


def test_block_causal_attention(den):
    x = inputs(den, seed=1)
    lp = den.log_probs(x, 0.5)
    for k in range(1, 4):  # a change in block k leaves blocks < k alone, moves block k
        y, last = x.clone(), min(k * B + B, x.shape[1]) - 1  # block k's last position
        y[:, last] = (y[:, last] + 1) % den.vocab_size
        out = den.log_probs(y, 0.5)
        assert torch.allclose(out[:, : k * B], lp[:, : k * B], atol=1e-6)
        assert not torch.allclose(out[:, k * B], lp[:, k * B])  # its first position sees it
    for end in (B, 2 * B, 3 * B, 14):  # the authors feed the blocks up to the current one
        assert torch.allclose(den.log_probs(x[:, :end], 0.5), lp[:, :end], atol=1e-5)


def test_causal_is_prefix_only(den):
    x = inputs(den, seed=2)
    lp = den.log_probs(x, 0.5, causal=True)
    for i in (0, 2, 5, 13):
        y = x.clone()
        y[:, i + 1:] = (y[:, i + 1:] + 7) % den.vocab_size
        assert torch.allclose(den.log_probs(y, 0.5, causal=True)[:, : i + 1], lp[:, : i + 1],
                              atol=1e-6)
    assert not torch.allclose(lp, den.log_probs(x, 0.5))


def test_rows_are_the_full_outputs_rows(den):
    x = inputs(den, seed=3)
    rows = x == den.mask_id
    for causal in (False, True):
        full = den.log_probs(x, 0.5, causal=causal)
        assert torch.allclose(den.log_probs(x, 0.5, causal=causal, rows=rows), full[rows],
                              atol=1e-6)


def test_dtype_option_and_checkpoint_errors(written, tmp_path):
    folder, _ = written
    half = load_denoiser(folder, dtype="bfloat16")
    assert half.backbone.vocab_embed.embedding.dtype == torch.bfloat16
    assert half.backbone.rotary_emb.inv_freq.dtype == torch.float32
    state = load_file(str(folder / "model.safetensors"))
    cases = [
        ({**{k: v for k, v in state.items() if k != "backbone.blocks.1.attn_out.weight"},
          "backbone.blocks.1.attn_outt.weight": state["backbone.blocks.1.attn_out.weight"]},
         None, r"missing keys: blocks\.1\.attn_out\.weight; unexpected keys: "
               r"blocks\.1\.attn_outt\.weight"),
        ({**state, "backbone.sigma_map.mlp.0.bias": torch.zeros(9)}, None,
         r"sigma_map\.mlp\.0\.bias: \(9,\)"),
        ({**state, "ema.decay": torch.tensor(0.9)}, None, r"without the 'backbone\.' prefix: "
                                                           r"ema\.decay"),
        (state, {"adaln": False}, "adaln"),
        (state, {"causal": True}, "autoregressive"),
    ]
    for i, (st, over, needle) in enumerate(cases):
        bad = tmp_path / f"bad{i}"
        save_state(bad, st)
        cfg = json.loads((folder / "config.json").read_text())
        (bad / "config.json").write_text(json.dumps({**cfg, **(over or {})}))
        for f in ("tokenizer.json", "tokenizer_config.json"):
            (bad / f).write_bytes((folder / f).read_bytes())
        with pytest.raises(CheckpointError, match=needle):
            load_denoiser(bad)


def _prompt(den, infill=True):
    prompt = torch.full((16,), den.mask_id)
    prompt[0] = den.tokenizer.bos_token_id  # the authors start every sample with BOS
    if infill:
        prompt[9] = 3
    return prompt


@pytest.mark.parametrize("name", [*STRATEGY_NAMES, "blocks_of_the_model"])
def test_every_strategy_runs(den, name):
    strategy = (Blocks(den.block_size) if name == "blocks_of_the_model"
                else every_strategy(GPT2_EOS)[name])
    prompt = _prompt(den)
    check_sample(generate(den, strategy, prompt), prompt, den.vocab_size)


@pytest.fixture(scope="module")
def paired(den, tmp_path_factory):
    ar = load_ar(write_gpt2_guide(tmp_path_factory.mktemp("guide") / "gpt2"))
    return pair_models(den, ar)


@pytest.mark.parametrize("name", GUIDE_NAMES)
def test_every_guide_runs_with_a_gpt2_guide(paired, name):
    den, ar = paired
    assert den.vocab_size == ar.vocab_size == GPT2_ROWS
    guide, strategy = every_guide(ar)[name]
    prompt = _prompt(den, infill=False)
    check_sample(generate(den, strategy, prompt, guide=guide), prompt, den.vocab_size)
