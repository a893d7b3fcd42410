"""Coordinator validation: bad input fails loudly, before any model call."""

import pytest
import torch

from decoding import Coordinator
from decoding.strategies import Ancestral, Blocks, Confidence, ReMDM


class CountingDenoiser(torch.nn.Module):
    vocab_size, mask_id, supports_causal, max_length = 4, 4, False, 16

    def __init__(self, bad=None):
        super().__init__()
        self.calls, self.bad = 0, bad

    def log_probs(self, x, t, causal=False):
        self.calls += 1
        lp = torch.zeros(*x.shape, 4).log_softmax(-1)
        if self.bad is not None:
            lp[..., 1] = self.bad
        return lp


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_samples=0, length=8, steps=2), "num_samples"),
    (dict(num_samples=2, length=8, steps=0), "steps"),
    (dict(num_samples=2, length=32, steps=2), "maximum"),
    (dict(num_samples=2, length=8, steps=2, batch_size=0), "batch_size"),
    (dict(num_samples=2, length=8, steps=2, prompt=torch.zeros(7, dtype=torch.long)), "shape"),
    (dict(num_samples=2, length=4, steps=2, prompt=torch.tensor([0, 9, 4, 4])), "outside"),
    (dict(num_samples=2, length=4, steps=2, prompt=torch.tensor([0.0, 1, 4, 4])), "integer"),
])
def test_bad_arguments_fail_before_any_call(kwargs, match):
    den = CountingDenoiser()
    with pytest.raises((ValueError, TypeError), match=match):
        Coordinator(den, Ancestral()).generate(**kwargs)
    assert den.calls == 0


def test_blocks_need_a_step_per_block():
    den = CountingDenoiser()
    with pytest.raises(ValueError, match="one step per block"):
        Coordinator(den, Blocks(2)).generate(2, 8, 3)
    assert den.calls == 0


@pytest.mark.parametrize("make, match", [
    (lambda: Ancestral(mode="greedy"), "mode"),
    (lambda: Confidence(score="logit"), "score"),
    (lambda: ReMDM(schedule="loop"), "schedule"),
    (lambda: ReMDM(eta=2.0), "eta"),
    (lambda: ReMDM(loop=True, t_on=0.1, t_off=0.5), "t_off"),
    (lambda: Blocks(0), "block_length"),
    (lambda: Blocks(4, stop_at_eos=True), "eos_id"),
])
def test_bad_strategy_settings(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_mask_inside_vocabulary_and_bad_transforms():
    den = CountingDenoiser()
    den.mask_id = 2
    with pytest.raises(ValueError, match="mask_id"):
        Coordinator(den, Ancestral())
    with pytest.raises(ValueError, match="top_p"):
        Coordinator(CountingDenoiser(), Ancestral(), top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        Coordinator(CountingDenoiser(), Ancestral(), temperature=0.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_marginals_fail_loudly(bad):
    with pytest.raises(ValueError, match="NaN"):
        Coordinator(CountingDenoiser(bad), Ancestral()).generate(2, 4, 1)


def test_progress_bar_and_trace(capsys):
    res = Coordinator(CountingDenoiser(), Ancestral(mode="exact")).generate(
        3, 8, 4, progress=True, generator=torch.Generator().manual_seed(0))
    assert "denoising" in capsys.readouterr().err
    assert [r.revealed for r in res.trace] == [6, 6, 6, 6]
    assert all(r.seconds >= 0 for r in res.trace) and res.seconds > 0
