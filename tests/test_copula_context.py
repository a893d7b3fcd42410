"""DCD with a short-sighted AR copula, against the exact HMM oracle.

``HMMAutoregressive(hmm, context=c)`` is the exact model p(x_i | x_{i-c} .. x_{i-1}): right, but
blind beyond c tokens. With the paper's rule (``context="full"``) the causal pass removes the
whole prefix from V, so the draft never sees the prefix beyond the window; hiding it from the
causal pass too (``context="auto"``) keeps it in V, and one token per step is then exact.
"""

import pytest
import torch

from copula import CopulaGuide, CopulaISGuide
from copula.dcd import resolve_context
from copula.draft import local_hide
from decoding import Coordinator
from decoding.strategies import Ancestral, LeftToRight
from models import HMM, HMMAutoregressive, HMMDenoiser

# Long runs and noisy emissions: the far prefix says much (a 1-token window is 0.27 from the
# truth in TV, a 2-token one 0.13; 6000 exact draws reach 0.07).
HMM_ = HMM.sticky(vocab_size=3, num_states=3, length=5, stay=0.95, seed=0)
N = 6000


def sample(guide, steps, strategy=None, seed=0):
    coord = Coordinator(HMMDenoiser(HMM_), strategy or LeftToRight(), guide)
    return coord.generate(N, HMM_.length, steps, generator=torch.Generator().manual_seed(seed),
                          batch_size=N).tokens


@pytest.mark.parametrize("context", [1, 2])
def test_windowed_hmm_ar_is_the_exact_short_sighted_conditional(context):
    seqs, joint = HMM_.all_sequences(), HMM_.joint()
    ar = HMMAutoregressive(HMM_, context=context)
    x = seqs[torch.randperm(seqs.shape[0], generator=torch.Generator().manual_seed(0))[:6]]
    batch = ar.log_probs(x).double()
    first, cache = ar.start(6)
    second = ar.extend(cache, x[:, :2])[:, :1]
    ar.crop(cache, 1)  # crop and refeed: the same numbers as feeding once
    ar.reorder(cache, torch.arange(6))
    inc = torch.cat([first[:, None], second, ar.extend(cache, x[:, 1:-1])], 1).double()
    for b in range(6):
        for i in range(HMM_.length):
            lo = max(0, i - context)
            match = (seqs[:, lo:i] == x[b, lo:i]).all(1)
            p = torch.stack([joint[match & (seqs[:, i] == v)].sum() for v in range(3)])
            truth = (p / p.sum()).log()
            assert torch.allclose(batch[b, i], truth, atol=1e-5)
            assert torch.allclose(inc[b, i], truth, atol=1e-5)


@pytest.mark.parametrize("context", [1, 2])
def test_one_token_per_step_is_exact_only_with_the_window_hidden(context):
    ar = HMMAutoregressive(HMM_, context=context)
    floor = HMM_.tv_noise_floor(N)
    alone = HMM_.tv(sample(CopulaGuide(ar), 1))  # one step: V = 0, the AR model alone
    windowed = HMM_.tv(sample(CopulaGuide(ar, context="auto"), HMM_.length))
    paper = HMM_.tv(sample(CopulaGuide(ar, context="full"), HMM_.length))
    assert alone > floor + 0.05
    assert windowed < floor + 0.02
    assert abs(paper - alone) < 0.03  # left to right, V carries no suffix: the AR model alone


def test_hiding_the_far_prefix_helps_at_every_step_count():
    ar = HMMAutoregressive(HMM_, context=1)
    for steps in (2, 3):
        windowed = HMM_.tv(sample(CopulaGuide(ar, context="auto"), steps))
        paper = HMM_.tv(sample(CopulaGuide(ar, context="full"), steps))
        assert windowed < paper - 0.02
    anc = Ancestral(mode="exact")
    assert (HMM_.tv(sample(CopulaGuide(ar), 3, anc))
            < HMM_.tv(sample(CopulaGuide(ar, context="full"), 3, anc)))


def test_a_whole_prefix_guide_is_the_papers_dcd_token_for_token():
    ar = HMMAutoregressive(HMM_)
    a = sample(CopulaGuide(ar), 3, Ancestral(mode="exact"))
    b = sample(CopulaGuide(ar, context="full"), 3, Ancestral(mode="exact"))
    assert torch.equal(a, b)


def test_context_option():
    class Windowed:
        context = 7

    assert resolve_context(Windowed(), "auto") == 7
    assert resolve_context(HMMAutoregressive(HMM_), "auto") is None
    assert resolve_context(Windowed(), "full") is None
    assert resolve_context(Windowed(), 3) == 3
    assert CopulaISGuide(Windowed(), context=2).drafter.context == 2
    for bad in (0, -1, "window", True, 1.5):
        with pytest.raises(ValueError, match="context"):
            resolve_context(Windowed(), bad)


def test_local_hide_keeps_the_window_before_each_rows_first_mask():
    masked = torch.tensor([[False] * 5 + [True] * 3,
                           [False, True] + [False] * 6,
                           [False] * 8])
    hide = local_hide(masked, 2)
    assert hide[0].tolist() == [True] * 3 + [False] * 5
    assert not hide[1].any()  # the first mask is closer to the start than the window
    assert not hide[2].any()  # nothing masked: nothing to draft
