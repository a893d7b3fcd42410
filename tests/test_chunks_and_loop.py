"""Ancestral chunks (DCD Algorithm 1), the ReMDM loop's three phases, and the copula draft's
transforms and first-token rule."""

from __future__ import annotations

import pytest
import torch

from copula import CopulaGuide
from copula.draft import log_ratio
from decoding import Coordinator, LogLinear
from decoding.sampling import normalize_rows
from decoding.strategies import Ancestral, ReMDM
from decoding.types import StepInfo, StepState
from models import HMM, HMMAutoregressive, HMMDenoiser


def run_strategy(strategy, steps, free, gen, record=None):
    """Drive a value-free strategy alone; returns the masked share after every step."""
    masked = free.clone()
    conf = torch.rand(free.shape, dtype=torch.float64, generator=gen)
    sched = LogLinear()
    times = sched.times(steps)
    shares = [1.0]
    for j in range(steps):
        info = StepInfo(j, steps, times[j], times[j + 1], sched)
        x = torch.where(masked, -1, 0)
        sel = strategy.select(info, StepState(x, masked, free, conf), gen)
        assert not (sel.reveal & ~masked).any()
        if record is not None:
            record.append(sel.reveal.clone())
        masked = masked & ~sel.reveal
        if sel.remask is not None:
            masked = masked | (sel.remask & free)
        shares.append(float(masked[free].double().mean()))
    return shares


@pytest.mark.parametrize("mode", ["posterior", "exact"])
def test_chunks_reveal_together_at_the_schedule_rate(mode, gen):
    B, L, c, steps = 3000, 20, 8, 4
    free = torch.ones(B, L, dtype=torch.bool)
    free[:, :3] = False  # a prompt ending inside the first chunk
    reveals = []
    shares = run_strategy(Ancestral(mode, chunk=c), steps, free, gen, reveals)
    sched = LogLinear()
    for j, t in enumerate(sched.times(steps)[1:], start=1):
        want = 1.0 - sched.revealed_fraction(t)
        tol = 0.01 if mode == "posterior" else 1.5 * c / (L - 3)  # exact: one chunk's rounding
        assert abs(shares[j] - want) < tol, (j, shares[j], want)
    if mode == "posterior":  # every chunk's free positions move as one unit
        for r in reveals:
            for a in range(0, L, c):
                part = r[:, a : a + c][:, free[0, a : a + c]]
                assert (part.all(1) | ~part.any(1)).all()
    assert shares[-1] == 0.0


def test_chunk_one_is_the_per_position_strategy(gen):
    free = torch.ones(4, 10, dtype=torch.bool)
    a = run_strategy(Ancestral(chunk=1), 3, free, torch.Generator().manual_seed(5))
    b = run_strategy(Ancestral(), 3, free, torch.Generator().manual_seed(5))
    assert a == b


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_bad_chunk_fails(bad):
    with pytest.raises(ValueError, match="chunk"):
        Ancestral(chunk=bad)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.2])
def test_bad_alpha_on_fails(bad):
    with pytest.raises(ValueError, match="alpha_on"):
        ReMDM(loop=True, alpha_on=bad)


def test_remdm_loop_masked_share_at_every_phase_boundary(gen):
    steps, t_on, t_off = 40, 0.55, 0.05  # grid 1 - j/40 hits both boundaries
    strategy = ReMDM("cap", eta=0.02, loop=True, t_on=t_on, t_off=t_off, alpha_on=0.9)
    free = torch.ones(4000, 16, dtype=torch.bool)
    shares = run_strategy(strategy, steps, free, gen)
    times = LogLinear().times(steps)
    at = {round(t, 6): s for t, s in zip(times, shares)}
    se = (0.1 * 0.9 / free.numel()) ** 0.5
    assert at[1.0] == 1.0
    # Phase 1 ends with 1 - alpha_on = 10% masked, not 1 - alpha(t_on) = 55% (log-linear).
    assert abs(at[t_on] - 0.1) < 5 * se
    # Phase 2 holds it while remasking.
    for t, s in at.items():
        if t_off <= t <= t_on:
            assert abs(s - 0.1) < 6 * se, (t, s)
    assert abs(at[t_off] - 0.1) < 5 * se
    # Phase 3 follows 1 - alpha(t) = (1 - alpha_on) t / t_off down to 0.
    assert abs(at[0.025] - 0.05) < 5 * (0.05 * 0.95 / free.numel()) ** 0.5
    assert at[0.0] == 0.0


HMM_ = HMM.random(vocab_size=4, num_states=3, length=4, seed=2, concentration=0.5)
M = HMM_.mask_id


def test_log_ratio_is_zero_without_right_context():
    raw = torch.log_softmax(torch.randn(5, 7, generator=torch.Generator().manual_seed(0),
                                        dtype=torch.float64), -1)
    for temperature, top_p in [(1.0, 1.0), (0.5, 1.0), (2.0, 0.8), (0.7, 0.5)]:
        bi = normalize_rows(raw, temperature, top_p)
        v = log_ratio(bi, raw, temperature)
        kept = torch.isfinite(bi)
        assert (v[kept].abs() < 1e-12).all() and (v[~kept] == -torch.inf).all()


def draw_last(guide, n, temperature, top_p):
    prompt = torch.tensor([1, 0, 2, M])  # only the last position is generated
    coord = Coordinator(HMMDenoiser(HMM_), Ancestral(), guide, temperature=temperature,
                        top_p=top_p)
    res = coord.generate(n, 4, 1, prompt=prompt, generator=torch.Generator().manual_seed(0))
    ar = HMMAutoregressive(HMM_).log_probs(prompt[None].clamp(max=3))[0, -1].double()
    return torch.bincount(res.tokens[:, -1], minlength=4).double() / n, ar


@pytest.mark.parametrize("temperature, top_p", [(0.5, 1.0), (1.5, 0.7)])
def test_dcd_with_no_right_context_is_the_ar_model_on_the_nucleus(temperature, top_p):
    n = 20000
    freq, ar = draw_last(CopulaGuide(HMMAutoregressive(HMM_)), n, temperature, top_p)
    # The exact denoiser's row at the last position is the AR conditional; V = 0 leaves the AR
    # model at the same temperature, restricted to the transformed row's nucleus.
    keep = torch.isfinite(normalize_rows(ar[None], temperature, top_p)[0])
    want = torch.softmax((ar / temperature).masked_fill(~keep, -torch.inf), -1)
    tv = 0.5 * (freq - want).abs().sum()
    assert tv < 0.02, (freq, want)


def test_marginal_first_token_draws_from_the_transformed_marginal():
    n, temperature = 20000, 0.5
    prompt = torch.tensor([M, 0, 2, 1])
    guide = CopulaGuide(HMMAutoregressive(HMM_), first_token="marginal")
    coord = Coordinator(HMMDenoiser(HMM_), Ancestral(), guide, temperature=temperature)
    res = coord.generate(n, 4, 1, prompt=prompt, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(res.tokens[:, 0], minlength=4).double() / n
    x = prompt[None].clone()
    row = HMMDenoiser(HMM_).log_probs(x, torch.ones(1))[0, 0].double()
    want = normalize_rows(row[None], temperature)[0].exp()
    assert 0.5 * (freq - want).abs().sum() < 0.02
    with pytest.raises(ValueError, match="first_token"):
        CopulaGuide(HMMAutoregressive(HMM_), first_token="uniform")
