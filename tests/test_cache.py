"""The denoiser KV cache (decoding.cache): exact where it must be, counted, refused where it
cannot work."""

from pathlib import Path

import pytest
import torch
from test_ar import V, tiny_gpt2, word_tokenizer

from copula import CopulaGuide, CopulaISGuide
from decoding import Coordinator
from decoding.cache import CacheCall
from decoding.cache_batch import BatchCache
from decoding.denoiser_batch import DenoiserBatch
from decoding.guides.apd import APDGuide
from decoding.guides.smc import SMCGuide
from decoding.guides.speculative import SpeculativeGuide
from decoding.strategies import Ancestral, Blocks, Confidence, LeftToRight, Threshold
from edlm import EnergyGuide
from models import HMM, HMMDenoiser
from models.ar.adapter import HFCausalLM
from models.ddit.backbone import DDiT, DDiTConfig
from models.ddit.heads import MDLMDenoiser, SEDDDenoiser

L = 24


def random_ddit(kind: str = "mdlm", seed: int = 3):
    torch.manual_seed(seed)
    net = DDiT(DDiTConfig(vocab_size=V + 1, hidden_size=32, cond_dim=16, n_blocks=2,
                          n_heads=2, max_length=32))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.25)
    den = SEDDDenoiser(net) if kind == "sedd" else MDLMDenoiser(net, time_conditioning=True)
    return den.eval()


@pytest.fixture(scope="module")
def ar():
    return HFCausalLM(tiny_gpt2(), tokenizer=word_tokenizer())


def noisy(den, seed=0, b=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (b, L), generator=g)
    return x.masked_fill(torch.rand(b, L, generator=g) < 0.5, den.mask_id)


@pytest.mark.parametrize("kind", ["mdlm", "sedd"])
@pytest.mark.parametrize("causal", [False, True])
def test_fresh_cache_gives_the_uncached_log_probs(kind, causal):
    """After a refresh at x, a windowed call (dual: the block; prefix: block and suffix) at the
    same x is the uncached forward: rotary positions, keys and masks line up."""
    den = random_ddit(kind)
    x, t = noisy(den), torch.tensor([0.9, 0.5, 0.2])
    rows = torch.zeros(3, L, dtype=torch.bool)
    rows[:, 8:16] = True
    with torch.inference_mode():
        full = den.log_probs(x, t, causal=causal)[rows]
        call = CacheCall(None, None, L)
        refresh = den.log_probs(x, t, causal=causal, rows=rows, cache=call)
        start = torch.full((3,), 8)
        dual = den.log_probs(x, t, causal=causal, rows=rows, cache=CacheCall(call.store, start, 8))
        prefix = den.log_probs(x, t, causal=causal, rows=rows,
                               cache=CacheCall(call.store, start, L - 8))
    for got in (refresh, dual, prefix):
        torch.testing.assert_close(got, full, atol=1e-5, rtol=0)
    assert call.tokens == 3 * L


def test_a_stale_cache_is_an_approximation():
    den = random_ddit("sedd")
    x, t = noisy(den), torch.full((3,), 0.6)
    rows = torch.zeros(3, L, dtype=torch.bool)
    rows[:, 8:16] = True
    with torch.inference_mode():
        call = CacheCall(None, None, L)
        den.log_probs(x, t, rows=rows, cache=call)
        x2 = x.clone()
        x2[:, 20] = 1  # after the block: the dual cache keeps its old keys and values
        x2[:, 2] = 1  # before it: the prefix's keys in every layer saw the old x
        full = den.log_probs(x2, t)[rows]
        start = torch.full((3,), 8)
        prefix = den.log_probs(x2, t, rows=rows, cache=CacheCall(call.store, start, L - 8))
        dual = den.log_probs(x2, t, rows=rows, cache=CacheCall(call.store, start, 8))
    assert (dual - full).abs().max() > 1e-3 and (prefix - full).abs().max() > 1e-3


def test_causal_calls_are_exact_without_refresh():
    """Causal attention never looks forward: the batch cache recomputes from the first changed
    position, and every call equals the uncached causal one, whatever changed where."""
    den = random_ddit("mdlm")
    coord = Coordinator(den, Blocks(8), cache="dual")
    x = noisy(den, b=2)
    batch = DenoiserBatch(coord, x)
    for start, change in [(0, 3), (0, 5), (8, 6), (8, 12), (16, 1)]:
        x = x.clone()
        x[0, change] = 4
        batch.cache.set_window(torch.full((2,), start), 8)
        need = batch.cache.window_mask()
        got = batch.rows(x, 0.5, causal=True, need=need)
        with torch.inference_mode():
            want = den.log_probs(x, torch.full((2,), coord.denoiser_time(0.5)), causal=True)
        torch.testing.assert_close(got[need], want[need], atol=1e-5, rtol=0)
    assert batch.forwards == 5 and batch.tokens < 5 * 2 * L


@pytest.mark.parametrize("strategy", ["ancestral", "confidence", "threshold"])
@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_refresh_at_every_call_gives_the_uncached_tokens(mode, strategy):
    den = random_ddit("sedd")
    inner = {"ancestral": Ancestral, "confidence": lambda: Confidence("prob"),
             "threshold": lambda: Threshold(0.3)}[strategy]
    out = {}
    for cache in ("none", mode):
        coord = Coordinator(den, Blocks(8, inner()), cache=cache, refresh_every=1)
        res = coord.generate(4, L, 9, generator=torch.Generator().manual_seed(5))
        out[cache] = res
    assert torch.equal(out["none"].tokens, out[mode].tokens)
    assert out["none"].nfe == out[mode].nfe
    assert out[mode].denoiser_tokens == out["none"].denoiser_tokens == 4 * L * out["none"].nfe[
        "denoiser"]


def test_cached_forwards_count_the_tokens_they_recompute():
    den = random_ddit("mdlm")
    res = {mode: Coordinator(den, Blocks(8), cache=mode).generate(
        2, L, 12, generator=torch.Generator().manual_seed(1)) for mode in ("none", "dual",
                                                                           "prefix")}
    assert res["none"].denoiser_tokens == 12 * 2 * L
    # three blocks of four steps: a refresh (L positions) then three windowed calls each
    assert res["dual"].denoiser_tokens == 3 * 2 * (L + 3 * 8)
    assert res["prefix"].denoiser_tokens == 2 * (3 * L + 3 * (24 + 16 + 8))
    assert all(r.nfe["denoiser"] == 12 for r in res.values())
    assert sum(r.denoiser_tokens for r in res["dual"].trace) == res["dual"].denoiser_tokens


def test_rows_in_different_blocks_refresh_on_their_own():
    """Rows that move to their next block at different steps: the rows that moved are
    refreshed (a full forward over them), the others run their block (a second forward)."""
    den = random_ddit("mdlm")
    coord = Coordinator(den, Blocks(8), cache="dual")
    x = noisy(den, b=3)
    batch = DenoiserBatch(coord, x)
    batch.cache.set_window(torch.tensor([0, 0, 0]), 8)
    batch.rows(x, 0.5, need=batch.cache.window_mask())
    x = x.clone()
    x[:, 2] = 1
    batch.cache.set_window(torch.tensor([0, 8, 0]), 8)
    need = batch.cache.window_mask()
    got = batch.rows(x, 0.5, need=need)
    assert batch.forwards == 3 and batch.tokens == 3 * L + L + 2 * 8
    with torch.inference_mode():
        want = den.log_probs(x, torch.full((3,), coord.denoiser_time(0.5)))
    torch.testing.assert_close(got[need][8:16], want[1, 8:16], atol=1e-5, rtol=0)


def test_reordered_cache_follows_its_rows():
    den = random_ddit("mdlm")
    coord = Coordinator(den, Blocks(8), cache="dual")
    x = noisy(den, b=3)
    batch = DenoiserBatch(coord, x)
    batch.cache.set_window(torch.zeros(3, dtype=torch.long), 8)
    batch.rows(x, 0.5, need=batch.cache.window_mask())
    index = torch.tensor([2, 2, 0])
    moved = batch.cache.reorder(index)
    old = batch.cache.slots[False].store.layers
    for layer_a, layer_b in zip(moved.slots[False].store.layers, old):
        for a, b in zip(layer_a, layer_b):
            assert torch.equal(a, b[index])
    assert isinstance(moved, BatchCache) and moved.slots[False].store.batch_size == 3


@pytest.mark.parametrize("guide", ["dcd", "dcd_is", "edlm", "smc"])
def test_guides_run_on_the_cached_path(ar, guide):
    den = random_ddit("mdlm")
    make = {"dcd": lambda: CopulaGuide(ar), "dcd_is": lambda: CopulaISGuide(ar, num_candidates=2),
            "edlm": lambda: EnergyGuide(ar, num_candidates=2),
            "smc": lambda: SMCGuide(ar, num_particles=3, ess_threshold=1.0)}[guide]
    inner = LeftToRight if guide == "dcd" else Ancestral
    out = {}
    for cache, every in (("none", None), ("dual", 1), ("prefix", None)):
        coord = Coordinator(den, Blocks(8, inner()), make(), cache=cache, refresh_every=every)
        out[cache] = coord.generate(2, L, 6, generator=torch.Generator().manual_seed(2))
    assert (out["prefix"].tokens != den.mask_id).all()
    assert out["prefix"].denoiser_tokens < out["none"].denoiser_tokens
    if guide in ("dcd", "smc"):  # the same algorithm: refreshed at every call, the same tokens
        assert torch.equal(out["none"].tokens, out["dual"].tokens)


def test_bad_cache_settings_are_refused_before_any_model_runs(ar):
    den = random_ddit("mdlm")
    hmm = HMMDenoiser(HMM.random(vocab_size=3, num_states=2, length=4, seed=0))
    with pytest.raises(ValueError, match="cache must be one of"):
        Coordinator(den, Blocks(8), cache="full")
    with pytest.raises(ValueError, match="has no KV cache"):
        Coordinator(hmm, Blocks(2), cache="prefix")
    with pytest.raises(ValueError, match="commits inside one block"):
        Coordinator(den, Ancestral(), cache="dual")
    with pytest.raises(ValueError, match="refresh_every"):
        Coordinator(den, Blocks(8), cache="dual", refresh_every=0)
    for guide in (SpeculativeGuide(ar), APDGuide(ar)):  # own loops, over left_to_right
        with pytest.raises(ValueError):
            Coordinator(den, Blocks(8, LeftToRight()), guide, cache="dual")
    with pytest.raises(ValueError, match="OwnLoop cannot use a denoiser cache"):
        Coordinator(den, Blocks(8), OwnLoop(), cache="dual")
    with pytest.raises(ValueError, match="same block"):
        Coordinator(den, Blocks(8, Threshold()), EnergyGuide(ar), cache="dual")


class OwnLoop:
    """A guide that drives its own loop and says nothing about a cache."""

    def check(self, denoiser):
        pass

    def run(self, loop, x):
        raise AssertionError("never reached")


class Stray(Blocks):
    """Claims the block but commits one position after it."""

    def select(self, info, state, generator):
        sel = super().select(info, state, generator)
        sel.reveal = sel.reveal.clone()
        sel.reveal[:, -1] |= state.masked[:, -1]
        return sel


def test_a_commit_outside_the_block_fails_loudly():
    den = random_ddit("mdlm")
    with pytest.raises(RuntimeError, match="outside the current block"):
        Coordinator(den, Stray(8), cache="dual").generate(
            2, L, 6, generator=torch.Generator().manual_seed(0))


def test_run_key_cache_is_checked_and_reaches_the_metrics(tmp_path):
    import json

    from hydra import compose, initialize_config_dir

    import experiments.run as runner
    from experiments.config import ConfigError, identity, validate

    conf = str(Path(__file__).resolve().parent.parent / "conf")

    def composed(overrides):
        with initialize_config_dir(config_dir=conf, version_base="1.3"):
            return compose("run", overrides=overrides)

    assert composed([]).cache == "none" and "cache" not in identity(composed([]))
    with pytest.raises(ConfigError, match="cache must be one of"):
        validate(composed(["cache=full"]))
    with pytest.raises(ConfigError, match="commits inside one block"):
        validate(composed(["cache=dual"]))  # the default strategy, ancestral
    with pytest.raises(ConfigError, match="cache_refresh_every"):
        validate(composed(["cache=dual", "strategy=blocks", "cache_refresh_every=0"]))
    small = ["strategy=blocks", "strategy.block_length=8", "length=16", "steps=[4]",
             "num_samples=2", "batch_size=2", "reference_samples=0", "threads=1"]
    out = {}
    for cache in ("none", "dual"):
        cfg = composed([*small, f"cache={cache}"])
        runner.run(cfg, tmp_path / cache, {"strategy": "blocks"})
        out[cache] = [json.loads(x) for x in (tmp_path / cache / "metrics.jsonl").read_text()
                      .splitlines()][0]
    assert out["dual"]["cache"] == "dual" and out["none"]["cache"] == "none"
    assert out["dual"]["denoiser_tokens"] < out["none"]["denoiser_tokens"] == 4 * 16


def test_cache_benchmark_smoke(capsys):
    import importlib
    import sys

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    if str(bench) not in sys.path:
        sys.path.insert(0, str(bench))
    rows = importlib.import_module("cache").main(["--quick"])
    printed = capsys.readouterr().out
    parts = {r["part"] for r in rows}
    assert parts == {"quality", "dcd", "shapes"} and "target" in printed
    quality = [r for r in rows if r["part"] == "quality"]
    assert [r["cache"] for r in quality] == ["none", "prefix", "dual"]
    assert quality[2]["tokens_per_sample"] < quality[1]["tokens_per_sample"] < \
        quality[0]["tokens_per_sample"]
