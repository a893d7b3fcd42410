"""The engine against the exact HMM oracle: known answers by enumeration."""

import torch

from decoding import Coordinator
from decoding.strategies import Ancestral, LeftToRight
from models import HMM, HMMDenoiser

N = 6000


def _tv(hmm, strategy, steps, gen, prompt=None):
    res = Coordinator(HMMDenoiser(hmm), strategy).generate(
        N, hmm.length, steps, generator=gen, prompt=prompt)
    return hmm.tv(res.tokens, prompt=prompt)


def test_one_position_per_step_reproduces_the_truth(gen):
    hmm = HMM.sticky(vocab_size=3, num_states=3, length=4, stay=0.85, seed=1)
    floor = hmm.tv_noise_floor(N)
    for strategy in (Ancestral(mode="exact"), LeftToRight()):
        assert _tv(hmm, strategy, hmm.length, gen) < floor + 0.015


def test_few_steps_show_the_independence_error(gen):
    hmm = HMM.sticky(vocab_size=3, num_states=3, length=4, stay=0.85, seed=1)
    floor = hmm.tv_noise_floor(N)
    one = _tv(hmm, Ancestral(mode="exact"), 1, gen)
    two = _tv(hmm, Ancestral(mode="exact"), 2, gen)
    assert one > floor + 0.1 and two > floor + 0.05
    assert one > two  # more steps, less independence error


def test_posterior_ancestral_many_steps_is_exact(gen):
    hmm = HMM.random(vocab_size=3, num_states=4, length=4, seed=3)
    floor = hmm.tv_noise_floor(N)
    assert _tv(hmm, Ancestral(), 64, gen) < floor + 0.015


def test_infilling_matches_the_true_conditional(gen):
    hmm = HMM.shift(vocab_size=4, length=5)
    m = hmm.mask_id
    prompt = torch.tensor([1, m, m, m, 0])
    floor = hmm.tv_noise_floor(N, prompt=prompt)
    assert _tv(hmm, Ancestral(mode="exact"), 3, gen, prompt=prompt) < floor + 0.015
