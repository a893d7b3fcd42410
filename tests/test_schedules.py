"""Noise schedules: inverses, and the noise level a time-conditioned network sees under every
sampling schedule matches the mask rate of the chain."""

from __future__ import annotations

import math

import pytest
import torch

from decoding import Coordinator
from decoding.schedules import Cosine, Linear, LogLinear, Schedule, denoiser_time
from decoding.strategies import Ancestral
from models.ddit.backbone import DDiT, DDiTConfig
from models.ddit.heads import MDLMDenoiser, SEDDDenoiser

SCHEDULES = {"loglinear": LogLinear(), "linear": Linear(), "cosine": Cosine()}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_time_at_inverts_alpha_for_floats_and_tensors(name):
    sched = SCHEDULES[name]
    ts = [0.0, 0.1, 0.37, 0.5, 0.9, 1.0]
    for t in ts:
        assert sched.time_at(sched.alpha(t)) == pytest.approx(t, abs=1e-9)
        assert sched.sigma(t) == pytest.approx(-math.log(sched.alpha(t)) if sched.alpha(t) > 0
                                               else math.inf)
    tt = torch.tensor(ts, dtype=torch.float64)
    assert torch.allclose(sched.time_at(sched.alpha(tt)), tt, atol=1e-9)
    # The noisy end beyond the schedule's own range maps to its t = 1, never past it.
    assert sched.time_at(-0.5) == 1.0 and sched.time_at(1.5) == 0.0


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_sigma_rate_is_the_derivative_of_sigma(name):
    sched = SCHEDULES[name]
    for t in (0.1, 0.5, 0.8):
        h = 1e-6
        numeric = (sched.sigma(t + h) - sched.sigma(t - h)) / (2 * h)
        assert sched.sigma_rate(t) == pytest.approx(numeric, rel=1e-5)


def test_same_schedule_passes_the_time_unchanged():
    for t in (1.0, 0.731, 0.0):
        assert denoiser_time(t, LogLinear(), LogLinear(1e-3)) == t
    assert denoiser_time(0.5, Cosine(), LogLinear()) == pytest.approx(
        (1 - Cosine().alpha(0.5)) / (1 - 1e-3))


def random_ddit(seed: int = 0, length: int = 64) -> DDiT:
    torch.manual_seed(seed)
    net = DDiT(DDiTConfig(vocab_size=6, hidden_size=32, cond_dim=16, n_blocks=1, n_heads=2,
                          max_length=length))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return net


def spy_noise(denoiser):
    """Record (masked fraction of the input, noise input) at every backbone call."""
    seen, trunk = [], denoiser.backbone.trunk

    def spy(x, sigma, *args, **kwargs):
        seen.append((float((x == denoiser.mask_id).double().mean()), sigma.clone()))
        return trunk(x, sigma, *args, **kwargs)

    denoiser.backbone.trunk = spy
    return seen


@pytest.mark.parametrize("family", ["sedd", "mdlm"])
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_noise_input_matches_the_mask_rate(family, name):
    net = random_ddit()
    den = SEDDDenoiser(net) if family == "sedd" else MDLMDenoiser(net, time_conditioning=True)
    seen = spy_noise(den)
    sched = SCHEDULES[name]
    steps = 5
    Coordinator(den, Ancestral(), schedule=sched).generate(
        64, 64, steps, generator=torch.Generator().manual_seed(0))
    times = sched.times(steps)[:-1]
    assert len(seen) == steps
    floor = 1 - den.schedule.alpha(1.0)  # the network's noisiest level: its own t = 1
    for t, (masked_fraction, sigma) in zip(times, seen):
        assert torch.all(sigma == sigma[0])
        alpha_seen = math.exp(-float(sigma[0]))
        # The network is told the sampler's alpha (up to float32 rounding)...
        assert alpha_seen == pytest.approx(max(sched.alpha(t), 1 - floor), rel=1e-5, abs=1e-6)
        # ...and that is the chain's mask rate: 4096 positions, std below 0.008.
        assert masked_fraction == pytest.approx(1 - alpha_seen, abs=0.04)


def test_untimed_mdlm_gets_zero_noise_under_any_schedule():
    den = MDLMDenoiser(random_ddit(), time_conditioning=False)
    seen = spy_noise(den)
    Coordinator(den, Ancestral(), schedule=Cosine()).generate(
        2, 8, 3, generator=torch.Generator().manual_seed(0))
    assert seen and all(torch.all(sigma == 0) for _, sigma in seen)


class Unmappable(Schedule):
    """A schedule with no inverse."""

    def alpha(self, t):
        return 1.0 - 0.999 * t * t


def test_a_pairing_without_an_inverse_is_refused_before_any_call():
    den = SEDDDenoiser(random_ddit())
    den.schedule = Unmappable()
    seen = spy_noise(den)
    with pytest.raises(ValueError, match="no inverse"):
        Coordinator(den, Ancestral(), schedule=LogLinear())
    assert not seen
    # The denoiser's own schedule needs no mapping.
    Coordinator(den, Ancestral(), schedule=den.schedule).generate(
        1, 4, 2, generator=torch.Generator().manual_seed(0))
    assert len(seen) == 2


def test_bad_declared_schedule_is_refused():
    den = SEDDDenoiser(random_ddit())
    den.schedule = "cosine"
    with pytest.raises(TypeError, match="Schedule"):
        Coordinator(den, Ancestral())
