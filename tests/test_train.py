"""Tiny-model training: tokenizer layout, data split, losses and the Hydra entry point."""

import math
import sys
from pathlib import Path

import pytest
import torch

from models.ddit.backbone import DDiT, DDiTConfig
from training.losses import ar_loss, mdlm_loss, sample_times
from training.shakespeare import (
    VALIDATION_WORKS,
    load_works,
    random_windows,
    split_works,
    token_stream,
)
from training.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer, vocab_info

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_TOKENIZER = ROOT / "models" / "tiny" / "tokenizer"


@pytest.fixture(autouse=True)
def one_thread():
    # These models are tiny: extra threads only spin against other processes on a shared CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small_tokenizer():
    works = load_works()
    return train_tokenizer([works["sonnets"], works["tempest"]], total_ids=600)


def test_tokenizer_layout_and_round_trip(small_tokenizer, tmp_path):
    info = vocab_info(small_tokenizer)
    assert (info.pad_id, info.bos_id, info.eos_id) == (0, 1, 2)
    assert len(small_tokenizer) == 600
    # The mask is the last id and lies outside the AR vocabulary 0..V-1.
    assert info.mask_id == info.vocab_size == len(small_tokenizer) - 1
    text = "Shall I compare thee to a summer's day?\n  Thou art more lovely -- 'tis 1609!"
    ids = small_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert all(0 <= i < info.vocab_size for i in ids)
    assert small_tokenizer.decode(ids) == text
    reloaded = load_tokenizer(save_tokenizer(small_tokenizer, tmp_path / "tok"))
    assert reloaded(text, add_special_tokens=False)["input_ids"] == ids
    assert vocab_info(reloaded) == info


@pytest.mark.skipif(not SHIPPED_TOKENIZER.is_dir(), reason="shipped tokenizer not built yet")
def test_shipped_tokenizer():
    info = vocab_info(load_tokenizer(SHIPPED_TOKENIZER))
    assert info.vocab_size == 4095 and info.mask_id == 4095


def test_split_is_by_work_and_disjoint(small_tokenizer, gen):
    train, valid = split_works()
    assert not set(train) & set(valid)
    assert sorted(train + valid) == sorted(load_works())
    assert len(train) + len(valid) == 42 and tuple(valid) == VALIDATION_WORKS
    assert split_works() == (train, valid)  # deterministic
    stream = token_stream(small_tokenizer, ["phoenix_and_the_turtle", "passionate_pilgrim"])
    assert (stream == vocab_info(small_tokenizer).eos_id).sum() == 2
    x = random_windows(stream, 5, 32, gen)
    assert x.shape == (5, 32) and x.dtype == torch.long


def _tiny_ddit(v: int) -> DDiT:
    return DDiT(DDiTConfig(vocab_size=v + 1, hidden_size=32, cond_dim=16, n_blocks=1,
                           n_heads=2, max_length=16))


def test_mdlm_loss_finite_positive_and_decreasing(gen):
    torch.manual_seed(0)
    v = 16
    model = _tiny_ddit(v)
    # Learnable structure: only 4 of the 16 tokens occur, in a cycle with a random phase.
    start = torch.randint(0, 4, (32, 1), generator=gen)
    x0 = (start + torch.arange(16)) % 4

    def fixed_loss(causal: bool = False) -> torch.Tensor:
        with torch.no_grad():
            return mdlm_loss(model, x0, v, torch.Generator().manual_seed(7), causal=causal)

    before = fixed_loss()
    # The output layer starts at zero, so the first loss is the uniform one: (1-eps)·log V.
    assert math.isclose(before.item(), math.log(v), rel_tol=0.15)
    assert torch.isfinite(fixed_loss(causal=True)) and fixed_loss(causal=True) > 0
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(20):
        loss = mdlm_loss(model, x0, v, gen, causal=bool(torch.rand((), generator=gen) < 0.25))
        assert torch.isfinite(loss) and loss > 0
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert fixed_loss() < 0.8 * before


def test_times_and_ar_loss(gen):
    t = sample_times(8, gen)
    assert t.shape == (8,) and (t >= 1e-3).all() and (t <= 1).all()
    # Antithetic times cover [0, 1) evenly: one per stratum of width 1/B.
    assert sorted(((t - 1e-3) / (1 - 1e-3) * 8).floor().long().tolist()) == list(range(8))
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=16, n_positions=17, n_embd=16, n_layer=1,
                                       n_head=2, bos_token_id=1, eos_token_id=2)).eval()
    x = torch.randint(3, 16, (2, 16), generator=gen)
    per_token = ar_loss(model, x, bos_id=1, reduction="none")
    assert per_token.shape == (2, 16) and torch.isfinite(per_token).all()
    assert torch.allclose(per_token.mean(), ar_loss(model, x, bos_id=1))


def test_entry_point_writes_loadable_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "denoiser"
    tokenizer_dir = SHIPPED_TOKENIZER if SHIPPED_TOKENIZER.is_dir() else tmp_path / "tok"
    overrides = [
        "model=denoiser_tiny", "model.recipe.hidden_size=32", "model.recipe.n_blocks=1",
        "model.recipe.n_heads=1", "model.recipe.cond_dim=16", "model.recipe.eval_repeats=1",
        "batch_size=4", "steps=3", "eval_every=2", "eval_windows=4", "final_eval_windows=4",
        "threads=1", f"out_dir={out}", f"tokenizer_dir={tokenizer_dir}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    # The real command-line entry point, run in-process (saves a second torch import).
    monkeypatch.setattr(sys, "argv", ["experiments.train", *overrides])
    from experiments.train import main

    main()
    assert (out / "model.safetensors").is_file() and (out / "train_log.json").is_file()
    from models.families import load_denoiser

    denoiser = load_denoiser(out)
    assert denoiser.vocab_size == denoiser.mask_id == len(denoiser.tokenizer) - 1
    x = torch.full((2, 8), denoiser.mask_id)
    logp = denoiser.log_probs(x, torch.ones(2))
    assert logp.shape == (2, 8, denoiser.vocab_size) and torch.isfinite(logp).all()


def test_windowed_guide_and_ema_through_the_entry_point(tmp_path, monkeypatch):
    # The windowed guide recipe trains, saves and loads as an AR model with its context.
    out = tmp_path / "ar"
    tokenizer_dir = SHIPPED_TOKENIZER if SHIPPED_TOKENIZER.is_dir() else tmp_path / "tok"
    overrides = [
        "model=ar_tiny", "model.recipe.n_embd=16", "model.recipe.intermediate_size=24",
        "model.recipe.n_head=2", "model.recipe.window=4", "model.recipe.n_layer=2",
        "batch_size=2", "steps=3",
        "eval_every=2", "eval_windows=2", "final_eval_windows=2", "ema_decay=0.9",
        "threads=1", f"out_dir={out}", f"tokenizer_dir={tokenizer_dir}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    monkeypatch.setattr(sys, "argv", ["training", *overrides])
    from experiments.train import main

    main()
    from models.ar.loading import load_ar

    ar = load_ar(out)
    assert ar.context == 2 * (4 - 1) + 1 and ar.max_length == 129
    logp = ar.log_probs(torch.randint(3, ar.vocab_size, (1, 12)))
    assert torch.isfinite(logp).all()
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(1, 12))


def test_ema_tracks_the_weights_with_a_warmup():
    from training.loop import Ema

    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = Ema(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # first update: decay min(0.5, 2/11) -> 2/11 of the old value kept
    ema.copy_to(model)
    torch.testing.assert_close(model.weight, torch.full((1, 2), 9 / 11))
    with pytest.raises(ValueError, match="ema_decay"):
        Ema(model, decay=1.0)
