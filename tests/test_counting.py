"""The engine counts AR calls through the handle it gives guides; guides count nothing."""

from __future__ import annotations

import pytest
import torch

from copula import CopulaGuide
from decoding import Coordinator
from decoding.counting import CountingAR
from decoding.guides import Independent
from decoding.protocols import ARModel
from decoding.strategies import Ancestral, LeftToRight
from decoding.types import Draft
from edlm import EnergyGuide
from models import HMM, HMMAutoregressive, HMMDenoiser

HMM6 = HMM.random(vocab_size=3, num_states=3, length=6, seed=0)


class ScoringGuide:
    """Draws every masked position, then calls the AR model three ways; counts nothing."""

    def __init__(self, ar):
        self.ar = ar
        self.seen = []

    def check(self, denoiser) -> None:
        pass

    def propose(self, ctx, generator) -> Draft:
        self.seen.append(ctx.ar)
        values, _ = ctx.marginals.sample(ctx.masked, generator)
        tokens = torch.where(ctx.masked, values[0], ctx.x)
        ctx.ar.log_probs(tokens)
        _, cache = ctx.ar.start(ctx.x.shape[0])
        ctx.ar.extend(cache, tokens[:, :2])
        ctx.ar.crop(cache, 1)
        ctx.ar.reorder(cache, torch.arange(ctx.x.shape[0]))
        return Draft(tokens=tokens)


class RawCounter(torch.nn.Module):
    """The HMM's AR model counting its own calls, to compare with the engine's count."""

    def __init__(self, hmm):
        super().__init__()
        self.inner, self.vocab_size = HMMAutoregressive(hmm), hmm.vocab_size
        self.forwards = 0

    def log_probs(self, x):
        self.forwards += 1
        return self.inner.log_probs(x)

    def start(self, batch_size):
        self.forwards += 1
        return self.inner.start(batch_size)

    def extend(self, cache, tokens):
        self.forwards += 1
        return self.inner.extend(cache, tokens)

    def crop(self, cache, length):
        self.inner.crop(cache, length)

    def reorder(self, cache, index):
        self.inner.reorder(cache, index)


def test_a_guide_that_counts_nothing_is_counted_exactly():
    steps, n, bs, L = 3, 10, 4, HMM6.length
    guide = ScoringGuide(HMMAutoregressive(HMM6))
    res = Coordinator(HMMDenoiser(HMM6), Ancestral(mode="exact"), guide).generate(
        n, L, steps, batch_size=bs, generator=torch.Generator().manual_seed(0))
    batches = 3  # 4 + 4 + 2 rows; exact mode reveals 2 positions at each of the 3 steps
    assert res.nfe["ar_forwards"] == steps * batches * 3
    # log_probs over B*L positions, B BOS contexts, B*2 fed tokens; crop/reorder are free.
    assert res.nfe["ar_tokens"] == steps * n * (L + 1 + 2)
    assert all(isinstance(h, CountingAR) and h.model is guide.ar for h in guide.seen)


@pytest.mark.parametrize("make", [lambda ar: EnergyGuide(ar, num_candidates=4),
                                  lambda ar: CopulaGuide(ar)], ids=["edlm", "dcd"])
@pytest.mark.parametrize("strategy", [Ancestral(), LeftToRight()], ids=["anc", "l2r"])
def test_engine_counts_equal_the_model_calls(make, strategy):
    ar = RawCounter(HMM6)
    res = Coordinator(HMMDenoiser(HMM6), strategy, make(ar)).generate(
        8, HMM6.length, 3, batch_size=3, generator=torch.Generator().manual_seed(0))
    assert res.nfe["ar_forwards"] == ar.forwards > 0


def test_guides_without_an_ar_model_get_no_handle():
    seen = []

    class Plain(Independent):
        def propose(self, ctx, generator):
            seen.append(ctx.ar)
            return super().propose(ctx, generator)

    res = Coordinator(HMMDenoiser(HMM6), Ancestral(), Plain()).generate(
        2, HMM6.length, 2, generator=torch.Generator().manual_seed(0))
    assert seen and all(h is None for h in seen)
    assert res.nfe["ar_forwards"] == res.nfe["ar_tokens"] == 0


def test_handle_is_an_ar_model_with_the_wrapped_attributes():
    ar = HMMAutoregressive(HMM6)
    handle = CountingAR(ar)
    assert isinstance(handle, ARModel) and handle.vocab_size == ar.vocab_size
    x = torch.zeros(2, 4, dtype=torch.long)
    assert torch.equal(handle.log_probs(x), ar.log_probs(x)) and handle.counts() == (1, 8)
    with pytest.raises(TypeError, match="vocab_size"):
        CountingAR(object())
