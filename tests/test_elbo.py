"""The masked-diffusion ELBO estimator against the exact HMM oracle.

With the exact denoiser the bound is an identity: its expectation over the masks, summed here
over every mask by enumeration, equals log p(continuation | prompt) by the exact AR model;
the Monte Carlo estimate falls within a few of its own standard errors of it.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from experiments.elbo import ELBO
from models import HMM, HMMAutoregressive, HMMDenoiser

HMM_ARGS = dict(vocab_size=3, num_states=3, length=6, seed=1)


@pytest.fixture(scope="module")
def oracle():
    hmm = HMM.random(**HMM_ARGS)
    x = hmm.sample(3, torch.Generator().manual_seed(7))
    return hmm, HMMDenoiser(hmm), HMMAutoregressive(hmm), x


def exact_conditional(ar, x: torch.Tensor, num_prompt: int) -> float:
    rows = ar.log_probs(x[None]).double()[0]
    return float(rows.gather(-1, x[:, None]).squeeze(-1)[num_prompt:].sum())


def all_masks(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([False, True], repeat=n)))


@pytest.mark.parametrize("num_prompt", [0, 2])
def test_expectation_is_the_exact_log_likelihood(oracle, num_prompt):
    """Both schemes' expectations, by enumeration over every mask set: an identity."""
    hmm, den, ar, xs = oracle
    elbo = ELBO(den, num_samples=1, batch_size=64)
    for x in xs:
        n = x.numel() - num_prompt
        masks = all_masks(n)
        values = elbo.sample_values(x, num_prompt, masks)
        sizes = masks.sum(1)
        keep = sizes > 0
        k = sizes[keep].double()
        binom = torch.tensor([math.comb(n, int(m)) for m in k], dtype=torch.float64)
        count = (values[keep] * (n / k) / (n * binom)).sum()  # l ~ U{1..n}, a uniform l-set
        beta = torch.exp(torch.lgamma(k) + torch.lgamma(n - k + 1) - torch.lgamma(
            torch.tensor(n + 1.0, dtype=torch.float64)))  # ∫ u^(k-1) (1-u)^(n-k) du
        time = (values[keep] * beta).sum()
        truth = exact_conditional(ar, x, num_prompt)
        assert float(count) == pytest.approx(truth, abs=2e-5)
        assert float(time) == pytest.approx(truth, abs=2e-5)
    # The whole sequence (no prompt) is log p(x) of the HMM itself.
    assert exact_conditional(ar, xs[0], 0) == pytest.approx(float(hmm.log_prob(xs[:1])), abs=1e-6)


@pytest.mark.parametrize("scheme,stratified", [("count", False), ("time", False),
                                               ("count", True)])
def test_monte_carlo_within_its_standard_error(oracle, scheme, stratified):
    _, den, ar, xs = oracle
    elbo = ELBO(den, num_samples=3000, batch_size=1000, scheme=scheme, stratified=stratified)
    for i, x in enumerate(xs):
        est = elbo.estimate(x, 2, torch.Generator().manual_seed(i))
        truth = exact_conditional(ar, x, 2)
        assert est.num_samples == 3000 and est.forwards == 3 and est.se > 0
        assert abs(est.value - truth) < 4 * est.se + 1e-9, (scheme, est, truth)


def test_count_scheme_has_lower_variance_here(oracle):
    _, den, _, xs = oracle
    seeds = torch.Generator().manual_seed
    count = ELBO(den, num_samples=2000, batch_size=2000).estimate(xs[0], 0, seeds(0))
    time = ELBO(den, num_samples=2000, batch_size=2000, scheme="time").estimate(xs[0], 0,
                                                                                  seeds(0))
    assert count.se < time.se


def test_same_generator_same_estimate_and_empty_continuation(oracle):
    _, den, _, xs = oracle
    elbo = ELBO(den, num_samples=16, batch_size=5)
    a = elbo.estimate(xs[0], 1, torch.Generator().manual_seed(3))
    b = elbo.estimate(xs[0].tolist(), 1, torch.Generator().manual_seed(3))
    assert a == b and a.forwards == 4
    empty = elbo.estimate(xs[0], xs[0].numel(), torch.Generator().manual_seed(3))
    assert (empty.value, empty.num_samples, empty.forwards) == (0.0, 0, 0)


class _AllRows(torch.nn.Module):
    """The tiny denoiser without its rows-only output: every row computed, then indexed."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.vocab_size, self.mask_id = inner, inner.vocab_size, inner.mask_id
        self.schedule = inner.schedule

    def log_probs(self, x, t, causal=False):
        return self.inner.log_probs(x, t, causal=causal)


def test_packed_rows_give_the_same_estimate_on_the_tiny_denoiser():
    from models import load_denoiser
    from models.hub import load_tokenizer

    den = load_denoiser("models/tiny/denoiser")
    tok = load_tokenizer("models/tiny/denoiser")
    ids = tok("MACBETH.\nSo foul and fair a day I have not seen.\n",
              add_special_tokens=False)["input_ids"]
    packed = ELBO(den, num_samples=12, batch_size=5).estimate(ids, 4, torch.Generator())
    full = ELBO(_AllRows(den), num_samples=12, batch_size=5).estimate(ids, 4, torch.Generator())
    assert packed.value == pytest.approx(full.value, abs=1e-4)
    assert packed.value < 0 and packed.se > 0


def test_bad_arguments_are_refused(oracle):
    _, den, _, xs = oracle
    with pytest.raises(ValueError, match="scheme"):
        ELBO(den, scheme="uniform")
    with pytest.raises(ValueError, match="num_samples"):
        ELBO(den, num_samples=0)
    with pytest.raises(ValueError, match="num_prompt"):
        ELBO(den).estimate(xs[0], 9, torch.Generator())
