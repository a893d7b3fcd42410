"""The two-model guides against the exact HMM oracle (exact marginals, AR and causal marginals).

TV is measured between the empirical distribution of N samples and the true (conditional)
distribution by enumeration; the noise floor is the TV of N exact samples.
"""

import pytest
import torch

from copula import CopulaGuide, CopulaISGuide
from decoding import Coordinator
from decoding.guides import Independent
from decoding.strategies import Ancestral, Confidence, LeftToRight
from edlm import EnergyGuide
from models import HMM, HMMAutoregressive, HMMDenoiser

N = 4000


def tv(hmm, guide, steps, prompt=None, strategy=None, seed=0, n=N, **kw):
    den = HMMDenoiser(hmm)
    coord = Coordinator(den, strategy or Ancestral(mode="exact"), guide)
    res = coord.generate(n, hmm.length, steps, prompt=prompt,
                         generator=torch.Generator().manual_seed(seed), **kw)
    return hmm.tv(res.tokens[: n if prompt is None or prompt.dim() == 1 else None],
                  prompt=prompt if prompt is None or prompt.dim() == 1 else None), res


STICKY = HMM.sticky(vocab_size=3, num_states=3, length=4, stay=0.85, seed=1)
# A language where DCD's one-coordinate copula step is *worse* than independent draws:
# a very sticky chain whose tokens say little about the state, infilled between two zeros.
DCD_HARD = HMM.sticky(vocab_size=3, num_states=3, length=4, stay=0.97, seed=0)
# Strong local dependence: the state moves by +1 or +2, emissions nearly deterministic.
SHIFT = HMM.shift(vocab_size=4, length=5)


@pytest.mark.parametrize("steps", [1, 2])
def test_edlm_with_exact_ar_reaches_the_truth(steps):
    floor = STICKY.tv_noise_floor(N)
    edlm, res = tv(STICKY, EnergyGuide(HMMAutoregressive(STICKY), num_candidates=256), steps)
    independent, _ = tv(STICKY, Independent(), steps)
    assert edlm < floor + 0.03
    assert independent > floor + 0.05
    ess = [r.ess for r in res.trace if r.ess is not None]
    assert ess and all(1.0 <= e <= 256 for e in ess)
    assert res.nfe["ar_tokens"] == steps * N * 256 * STICKY.length


def test_edlm_error_falls_as_k_grows():
    ar = HMMAutoregressive(STICKY)
    errors = [tv(STICKY, EnergyGuide(ar, num_candidates=k), 1)[0] for k in (1, 4, 16, 64)]
    assert all(a > b - 0.01 for a, b in zip(errors, errors[1:])), errors
    assert errors[0] - errors[-1] > 0.1, errors


def test_edlm_outside_its_window_is_independent():
    ar = HMMAutoregressive(STICKY)
    late = EnergyGuide(ar, num_candidates=8, window=(0.0, 0.3))
    for strategy in (Ancestral(), Confidence("margin")):
        a = tv(STICKY, late, 2, strategy=strategy)[1]
        b = tv(STICKY, Independent(), 2, strategy=strategy)[1]
        assert torch.equal(a.tokens, b.tokens) and a.nfe["ar_forwards"] == 0


@pytest.mark.parametrize("strategy", [Ancestral(), Confidence("prob")], ids=["anc", "conf"])
def test_k1_reproduces_independent_token_for_token(strategy):
    ar = HMMAutoregressive(STICKY)
    a = tv(STICKY, EnergyGuide(ar, num_candidates=1), 3, strategy=strategy)[1]
    b = tv(STICKY, Independent(), 3, strategy=strategy)[1]
    assert torch.equal(a.tokens, b.tokens)


def test_one_candidate_importance_path_equals_independent():
    """The resampling machinery itself (forced with K=1) consumes randomness like Independent
    and keeps each row's own candidate."""

    class ForcedK1(EnergyGuide):
        def propose(self, ctx, generator):
            return self.importance_draft(ctx, generator, 1)

    ar = HMMAutoregressive(STICKY)
    a = tv(STICKY, ForcedK1(ar, num_candidates=1), 2, strategy=Confidence("prob"))[1]
    b = tv(STICKY, Independent(), 2, strategy=Confidence("prob"))[1]
    assert torch.equal(a.tokens, b.tokens)


@pytest.mark.parametrize("make", [
    lambda ar: EnergyGuide(ar, num_candidates=16),
    lambda ar: CopulaISGuide(ar, num_candidates=8),
], ids=["edlm", "dcd_is"])
def test_candidates_never_mix_across_rows(make):
    """Rows with different clamps in one batch each follow their own conditional, and the
    result does not depend on the batch size."""
    hmm, m = SHIFT, SHIFT.mask_id
    prompts = torch.tensor([[1, m, m, m, 0], [3, m, m, m, 2]]).repeat(N // 2, 1)
    res = tv(hmm, make(HMMAutoregressive(hmm)), 1, prompt=prompts)[1]
    one_by_one = tv(hmm, make(HMMAutoregressive(hmm)), 1, prompt=prompts[:400], n=400,
                    batch_size=1)[1]
    for r, p in ((0, prompts[0]), (1, prompts[1])):
        floor = hmm.tv_noise_floor(N // 2, prompt=p)
        assert hmm.tv(res.tokens[r::2], prompt=p) < floor + 0.03
        assert hmm.tv(one_by_one.tokens[r::2], prompt=p) < hmm.tv_noise_floor(200, prompt=p) + 0.05


@pytest.mark.parametrize("steps", [1, 2])
def test_dcd_beats_independent_on_local_dependence(steps):
    m = SHIFT.mask_id
    prompt = torch.tensor([1, m, m, m, 0])
    ar = HMMAutoregressive(SHIFT)
    dcd = tv(SHIFT, CopulaGuide(ar), steps, prompt=prompt)[0]
    independent = tv(SHIFT, Independent(), steps, prompt=prompt)[0]
    assert dcd < independent - 0.02
    assert dcd < SHIFT.tv_noise_floor(N, prompt=prompt) + 0.03


def test_dcd_can_be_worse_and_the_is_correction_repairs_it():
    m = DCD_HARD.mask_id
    hard = torch.tensor([0, m, m, 0])
    ar = HMMAutoregressive(DCD_HARD)
    floor = DCD_HARD.tv_noise_floor(N, prompt=hard)
    dcd = tv(DCD_HARD, CopulaGuide(ar), 1, prompt=hard)[0]
    independent = tv(DCD_HARD, Independent(), 1, prompt=hard)[0]
    corrected = tv(DCD_HARD, CopulaISGuide(ar, num_candidates=16), 1, prompt=hard)[0]
    assert dcd > independent + 0.02
    assert corrected < floor + 0.02
    m = SHIFT.mask_id
    easy = torch.tensor([1, m, m, m, 0])
    corrected = tv(SHIFT, CopulaISGuide(HMMAutoregressive(SHIFT), num_candidates=16), 1,
                   prompt=easy)[0]
    assert corrected < SHIFT.tv_noise_floor(N, prompt=easy) + 0.02


def test_dcd_left_to_right_decodes_each_token_once():
    hmm = HMM.random(vocab_size=4, num_states=3, length=8, seed=0)
    ar = HMMAutoregressive(hmm)
    for steps in (1, 4, 8):
        res = tv(hmm, CopulaGuide(ar), steps, strategy=LeftToRight(), n=16)[1]
        assert res.nfe["ar_tokens"] == 16 * hmm.length  # BOS + L-1 tokens, none twice
        assert res.nfe["denoiser"] == 2 * steps  # bidirectional + causal per step


def test_guides_check_the_pair():
    hmm = HMM.random(vocab_size=4, num_states=3, length=6, seed=0)
    other = HMMAutoregressive(HMM.random(vocab_size=5, num_states=3, length=6, seed=0))
    for guide in (EnergyGuide(other), CopulaGuide(other), CopulaISGuide(other)):
        with pytest.raises(ValueError, match="vocabulary mismatch"):
            Coordinator(HMMDenoiser(hmm), Ancestral(), guide)
    den = HMMDenoiser(hmm)
    den.supports_causal = False
    with pytest.raises(ValueError, match="causal"):
        Coordinator(den, Ancestral(), CopulaGuide(HMMAutoregressive(hmm)))
    for bad in (dict(num_candidates=0), dict(window=(0.5, 0.2)), dict(temperature=0.0),
                dict(resampling="stratified")):
        with pytest.raises(ValueError):
            EnergyGuide(HMMAutoregressive(hmm), **bad)
