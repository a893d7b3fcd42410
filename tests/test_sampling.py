"""Float64 categorical sampling: correctness (chi-square), transforms, memory-bounded chunks."""

import math

import pytest
import torch
from scipy.stats import chisquare

from decoding import sampling
from decoding.sampling import Marginals, gumbel_max, normalize_rows


def test_inverse_cdf_matches_probabilities(gen):
    logits = torch.randn(1, 50, generator=gen) * 2
    p = torch.softmax(logits.double(), -1)[0]
    n = 40000
    marg = Marginals(torch.log_softmax(logits, -1).expand(n, -1)[None])
    tokens, log_q = marg.sample(torch.ones(1, n, dtype=torch.bool), gen)
    counts = torch.bincount(tokens[0, 0], minlength=50).double()
    keep = p * n >= 5  # chi-square needs enough expected counts per cell
    obs, exp = counts[keep], p[keep] * n
    if (~keep).any():
        obs = torch.cat([obs, counts[~keep].sum()[None]])
        exp = torch.cat([exp, (p[~keep] * n).sum()[None]])
    assert chisquare(obs.numpy(), exp.numpy()).pvalue > 1e-3
    assert torch.allclose(log_q[0, 0], p.log()[tokens[0, 0]])


def test_zero_probability_tokens_never_drawn(gen):
    lp = torch.tensor([[0.0, -math.inf, 0.0, -math.inf]]).log_softmax(-1)
    marg = Marginals(lp.expand(5000, -1)[None])
    tokens, _ = marg.sample(torch.ones(1, 5000, dtype=torch.bool), gen)
    assert set(tokens.unique().tolist()) == {0, 2}


def test_chunked_draws_equal_unchunked(gen, monkeypatch):
    lp = torch.randn(3, 7, 11).log_softmax(-1)
    where = torch.rand(3, 7) < 0.6
    seed = 99
    full, _ = Marginals(lp).sample(where, torch.Generator().manual_seed(seed), num_samples=3)
    monkeypatch.setattr(sampling, "CHUNK_ELEMENTS", 11 * 2)  # two rows per chunk
    small, _ = Marginals(lp).sample(where, torch.Generator().manual_seed(seed), num_samples=3)
    assert torch.equal(full, small)
    assert (full[:, ~where] == 0).all()


def test_temperature_and_top_p():
    lp = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    hot = normalize_rows(lp, temperature=2.0).exp()
    assert torch.allclose(hot, torch.softmax(lp.double() / 2, -1))
    nucleus = normalize_rows(lp, top_p=0.7).exp()
    assert torch.allclose(nucleus, torch.tensor([[0.5 / 0.8, 0.3 / 0.8, 0.0, 0.0]],
                                                dtype=torch.float64))
    assert torch.equal(normalize_rows(lp, top_p=0.01).exp()[0, 0], torch.tensor(1.0).double())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_marginals_rejected(bad, gen):
    lp = torch.zeros(1, 2, 3)
    lp[0, 1, 2] = bad
    with pytest.raises(ValueError, match="NaN"):
        Marginals(lp).sample(torch.ones(1, 2, dtype=torch.bool), gen)


def test_float32_gumbel_noise_is_capped():
    """Every float32 uniform gives Gumbel noise below ~16.64 (float64 reaches ~36.7): an
    option whose log-probability trails a dominant one by more than ~19.4 can never win."""
    u32 = 1.0 - torch.arange(1, 4, dtype=torch.float32) * 2.0**-24
    cap32 = (-torch.log(-torch.log(u32))).max().item()
    u64 = torch.tensor(1.0 - 2.0**-53, dtype=torch.float64)
    cap64 = (-torch.log(-torch.log(u64))).item()
    assert 16.5 < cap32 < 16.7 and cap64 > 36


@pytest.mark.slow
def test_float32_gumbel_is_biased_where_float64_is_not():
    """MDLM-style step categorical: one 'stay masked' option against many rare tokens whose
    log-gap (18.5) is beyond float32 Gumbel's reach. float64 draws them at their rate."""
    n_tail, draws = 2**19, 2400
    gap = 18.5
    logits = torch.full((n_tail + 1,), -gap)
    logits[0] = 0.0
    p_tail = n_tail * math.exp(-gap) / (1 + n_tail * math.exp(-gap))
    expected = draws * p_tail  # about 12
    hits = {}
    for dtype in (torch.float32, torch.float64):
        g = torch.Generator().manual_seed(0)
        hits[dtype] = sum(int((gumbel_max(logits.expand(50, -1), g, dtype) != 0).sum())
                          for _ in range(draws // 50))
    assert abs(hits[torch.float64] - expected) < 4 * math.sqrt(expected)
    assert hits[torch.float32] < expected / 4
