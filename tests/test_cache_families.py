"""The denoiser KV cache on the families' hub-format random checkpoints: BD3-LM's exact block
cache gives the uncached tokens; Dream's, LLaDA's and a BERT masked LM's cached calls give the
uncached log-probs when the store is fresh; models the cache cannot run refuse it."""

from __future__ import annotations

import pytest
import torch

from decoding import Coordinator
from decoding.cache import CacheCall
from decoding.strategies import Ancestral, Blocks, Confidence, Threshold
from models import load_denoiser
from tests.adapted_checkpoints import write_bd3lm, write_bert, write_diffugpt, write_modernbert
from tests.family_checkpoints import write_dream, write_llada


@pytest.fixture(scope="module")
def bd3lm(tmp_path_factory):
    return load_denoiser(write_bd3lm(tmp_path_factory.mktemp("bd3lm") / "bs4", 4)[0])


def eos_prone(den):
    """The same checkpoint with EOS made likely, so that variable-length stops happen."""
    eos = den.tokenizer.eos_token_id
    with torch.no_grad():
        den.backbone.output_layer.linear.bias[den.token_space._in[eos]] += 9.0
    return den, eos


@pytest.mark.parametrize("strategy", ["ancestral", "confidence", "threshold", "eos", "blocks6"])
def test_bd3lm_block_cache_gives_the_uncached_tokens(bd3lm, strategy, tmp_path):
    den, eos = bd3lm, bd3lm.tokenizer.eos_token_id
    if strategy == "eos":
        den, eos = eos_prone(load_denoiser(write_bd3lm(tmp_path / "eos", 4, seed=1)[0]))
    make = {"ancestral": lambda: Blocks(4, Ancestral(mode="exact")),
            "confidence": lambda: Blocks(4, Confidence("prob")),
            "threshold": lambda: Blocks(4, Threshold(0.5)),
            "eos": lambda: Blocks(4, stop_at_eos=True, eos_id=eos),
            "blocks6": lambda: Blocks(6)}[strategy]  # not the model's block: still exact
    prompt = torch.full((32,), den.mask_id)
    prompt[0] = eos  # GPT-2's BOS, as BD3-LM's sampler starts
    out = {mode: Coordinator(den, make(), cache=mode, top_p=0.9).generate(
        3, 32, 16, prompt=prompt, generator=torch.Generator().manual_seed(4))
        for mode in ("none", "prefix", "dual")}
    for mode in ("prefix", "dual"):
        assert torch.equal(out[mode].tokens, out["none"].tokens)
        assert out[mode].nfe == out["none"].nfe
        assert out[mode].denoiser_tokens < out["none"].denoiser_tokens / 3
    if strategy == "eos":  # the variable-length stop did happen
        assert ((out["none"].tokens[:, 1:] == eos).sum(1) > 8).all()


def test_bd3lm_block_cache_recomputes_the_finished_block_once(bd3lm):
    """Block by block, one position a step: each step runs its block, and the first step of a
    block also the block just finished (BD3-LM's store_kv pass, merged into that forward)."""
    res = Coordinator(bd3lm, Blocks(4, Ancestral(mode="exact")), cache="prefix").generate(
        2, 16, 16, generator=torch.Generator().manual_seed(0))
    assert res.denoiser_tokens == 2 * (16 * 4 + 3 * 4)  # 16 steps of a block, 3 block starts


@pytest.fixture(scope="module", params=["dream", "llada", "bert"])
def family(request, tmp_path_factory):
    write = {"dream": write_dream, "llada": write_llada, "bert": write_bert}[request.param]
    den = load_denoiser(write(tmp_path_factory.mktemp(request.param) / "ckpt"), dtype="float32")
    assert den.supports_cache == ("prefix", "dual")  # the masked LM's: found by its probe
    return den


@pytest.mark.parametrize("causal", [False, True])
def test_fresh_cache_gives_the_uncached_log_probs(family, causal):
    den = family
    B, L = 2, 20
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 60, (B, L), generator=g)
    x[:, 5:15] = den.mask_id
    t = torch.ones(B)
    rows = torch.zeros(B, L, dtype=torch.bool)
    rows[:, 8:16] = True
    with torch.inference_mode():
        full = den.log_probs(x, t, causal=causal)[rows]
        call = CacheCall(None, None, L)
        got = [den.log_probs(x, t, causal=causal, rows=rows, cache=call)]
        for n in (8, L - 8):  # dual: the block; prefix: the block and the suffix
            got.append(den.log_probs(x, t, causal=causal, rows=rows,
                                     cache=CacheCall(call.store, torch.full((B,), 8), n)))
        x2 = x.clone()
        x2[:, 18] = 7
        stale = den.log_probs(x2, t, rows=rows, cache=CacheCall(call.store, torch.full((B,), 8), 8))
    for lp in got:
        torch.testing.assert_close(lp, full, atol=1e-5, rtol=0)
    if not causal:  # the dual cache keeps the suffix's old keys: an approximation
        assert (stale - den.log_probs(x2, t)[rows]).abs().max() > 1e-3


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_refreshed_at_every_call_the_family_samples_the_uncached_tokens(family, mode):
    prompt = torch.full((16,), family.mask_id)
    prompt[:3] = torch.tensor([5, 6, 7])
    out = {cache: Coordinator(family, Blocks(4, Confidence("prob")), cache=cache,
                              refresh_every=1).generate(
        2, 16, 8, prompt=prompt, generator=torch.Generator().manual_seed(1))
        for cache in ("none", mode)}
    assert torch.equal(out["none"].tokens, out[mode].tokens)
    approx = Coordinator(family, Blocks(4, Confidence("prob")), cache=mode).generate(
        2, 16, 8, prompt=prompt, generator=torch.Generator().manual_seed(1))
    assert approx.denoiser_tokens < out["none"].denoiser_tokens


@pytest.mark.parametrize("write", [write_modernbert, write_diffugpt])
def test_families_without_a_cache_refuse_one(tmp_path, write):
    """ModernBERT (local attention, no cache argument: its probe fails) and DiffuGPT."""
    den = load_denoiser(write(tmp_path / "ckpt"))
    with pytest.raises(ValueError, match="has no KV cache"):
        Coordinator(den, Blocks(4), cache="dual")


def test_bd3lm_preset_samples_with_the_exact_cache(tmp_path):
    """experiment=bd3lm_owt (its sampler, prefix cache) on a hub-format random checkpoint: a
    BOS prompt, blocks of the model's size, the same tokens as cache=none."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    import experiments.config  # noqa: F401  (the run schema)
    from experiments.session import Session

    folder = write_bd3lm(tmp_path / "bs4", 4)[0]
    conf = str(Path(__file__).resolve().parent.parent / "conf")
    out = {}
    for cache in ("prefix", "none"):
        with initialize_config_dir(config_dir=conf, version_base="1.3"):
            cfg = compose("run", overrides=[
                "experiment=bd3lm_owt", f"denoiser.name_or_path={folder}", "device=cpu",
                "strategy.block_length=4", "length=16", "num_samples=2", f"cache={cache}"])
        assert cfg.top_p == 0.9 and cfg.strategy.stop_at_eos and cfg.strategy.inner.mode == "exact"
        s = Session(cfg, {"experiment": "bd3lm_owt"})
        prompts = s.prompts
        assert (prompts[:, 0] == s.denoiser.tokenizer.eos_token_id).all()
        out[cache] = s.coordinator.generate(2, 16, 16, prompt=prompts,
                                            generator=torch.Generator().manual_seed(0))
    assert torch.equal(out["prefix"].tokens, out["none"].tokens)
    assert out["prefix"].denoiser_tokens < out["none"].denoiser_tokens
