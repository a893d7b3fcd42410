"""SEDD's own samplers (``Analytic``, ``Euler``) against a reference written from SEDD's math.

The reference enumerates every state of a tiny SEDD's chain (3 real tokens, 3 positions) and
pushes the exact probabilities through SEDD's update literally: the staggered score times the
transposed transition over all V+1 states (MASK included), computed from the network's own
log-score output, then the denoise step. The engine's samples must match it by TV to the
noise floor, and differ from the MDLM-style step (reveal with (α_s-α_t)/(1-α_t)) when the
model's score mass is not the ideal one.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from decoding import Coordinator
from decoding.guides import Independent
from decoding.schedules import Cosine, LogLinear
from decoding.strategies import Analytic, Euler
from decoding.types import StepInfo
from models import HMM, HMMDenoiser
from models.ddit.backbone import DDiT, DDiTConfig
from models.ddit.heads import MDLMDenoiser, SEDDDenoiser

V, L, T, N = 3, 3, 2, 20000


def tiny_sedd(mass_shift: float = 0.0) -> SEDDDenoiser:
    """Random weights everywhere (the zero init would make the score ideal); ``mass_shift`` is
    added to every real token's logit, which multiplies the score mass by e^shift."""
    torch.manual_seed(0)
    net = DDiT(DDiTConfig(vocab_size=V + 1, hidden_size=16, cond_dim=8, n_blocks=1, n_heads=2,
                          max_length=L))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        net.output_layer.linear.bias[:V] += mass_shift
    return SEDDDenoiser(net).eval()


def step_probs(den, x, t, s, rule):
    """Per-position next-state probabilities (n, L, V+1) of one step, in float64.

    ``rule``: "analytic" (SEDD's staggered score x transposed transition), "euler" (SEDD's
    reverse rate), "mdlm" (posterior reveal probability, values ∝ score), "denoise".
    """
    sched = LogLinear()
    with torch.no_grad():
        score = den.log_score(x, torch.full((x.shape[0],), t)).double().exp()  # (n, L, V+1)
    masked = x == V
    if rule == "denoise":
        probs = score[..., :V] / score[..., :V].sum(-1, keepdim=True)
        probs = torch.cat([probs, torch.zeros_like(probs[..., :1])], dim=-1)
    elif rule == "analytic":
        dsigma = sched.sigma(t) - sched.sigma(s)
        stag = score * math.exp(dsigma)  # SEDD's staggered_score for the absorbing graph
        stag[..., V] += (1 - math.exp(dsigma)) * score.sum(-1)
        edge = torch.full_like(score, 1 - math.exp(-dsigma))  # transp_transition at MASK
        edge[..., V] = 1.0
        probs = stag * edge
    elif rule == "euler":
        rate = (t - s) * sched.sigma_rate(t) * score
        rate[..., V] = 0.0
        probs = rate.clone()
        probs[..., V] = 1.0 - rate.sum(-1)
    else:
        p_reveal = (sched.alpha(s) - sched.alpha(t)) / (1 - sched.alpha(t))
        probs = score.clone()
        probs[..., :V] = p_reveal * score[..., :V] / score[..., :V].sum(-1, keepdim=True)
        probs[..., V] = 1 - p_reveal
    probs = probs.clamp(min=0)  # a negative MASK entry never wins the categorical draw
    probs = probs / probs.sum(-1, keepdim=True)
    keep = torch.nn.functional.one_hot(x, V + 1).double()
    return torch.where(masked[..., None], probs, keep)


def exact_chain(den, rule: str) -> torch.Tensor:
    """The exact (V**L,) output distribution of T steps of ``rule`` and the denoise step."""
    states = torch.tensor(list(itertools.product(range(V + 1), repeat=L)))
    index = {tuple(s.tolist()): i for i, s in enumerate(states)}
    p = torch.zeros(len(states), dtype=torch.float64)
    p[index[(V,) * L]] = 1.0
    dt = (1 - 1e-5) / T
    grid = [1 - j * dt for j in range(T)] + [1e-5]
    steps = [(grid[j], grid[j + 1], rule) for j in range(T)] + [(1e-5, 0.0, "denoise")]
    for t, s, r in steps:
        probs = step_probs(den, states, t, s, r)  # (S, L, V+1)
        nxt = torch.zeros_like(p)
        for target_i, target in enumerate(states):
            # P(x -> target) = prod_i probs[x, i, target_i]
            nxt[target_i] = (p * probs[:, torch.arange(L), target].prod(-1)).sum()
        p = nxt
    real = (states < V).all(-1)
    assert p[~real].sum() < 1e-12
    return p[real]  # ordered as itertools.product(range(V), repeat=L)


def empirical(tokens: torch.Tensor) -> torch.Tensor:
    codes = (tokens * torch.tensor([V ** (L - 1 - i) for i in range(L)])).sum(-1)
    return torch.bincount(codes, minlength=V ** L).double() / tokens.shape[0]


def tv(p, q) -> float:
    return 0.5 * float((p - q).abs().sum())


def noise_floor(p, n=N, repeats=5) -> float:
    g = torch.Generator().manual_seed(0)
    draws = [torch.multinomial(p, n, replacement=True, generator=g) for _ in range(repeats)]
    return sum(tv(torch.bincount(d, minlength=p.numel()).double() / n, p) for d in draws) / repeats


def engine(den, strategy, seed=0):
    return Coordinator(den, strategy, Independent()).generate(
        N, L, T, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["analytic", "euler"])
@pytest.mark.parametrize("mass_shift", [1.0, -3.0])
def test_matches_sedds_update_by_enumeration_and_differs_from_mdlm(name, mass_shift):
    den = tiny_sedd(mass_shift)
    truth = exact_chain(den, name)
    res = engine(den, Analytic() if name == "analytic" else Euler())
    floor = noise_floor(truth)
    assert tv(empirical(res.tokens), truth) < floor + 0.01
    # The score mass is e^1 or e^-3 times the ideal one: SEDD's chain is not MDLM's.
    mdlm = exact_chain(den, "mdlm")
    assert tv(truth, mdlm) > 5 * floor
    assert tv(empirical(res.tokens), mdlm) > 3 * floor
    # T predictor steps and the denoise step, each one forward while masks are left (a mass
    # above the ideal one reveals everything at the first step).
    assert len(res.trace) == T + 1
    assert res.trace[-1].t == pytest.approx(1e-5) and res.trace[-1].s == 0.0
    assert res.nfe["denoiser"] == (T + 1 if mass_shift < 0 else 1)


def test_ideal_mass_gives_the_posterior_reveal_probability():
    torch.manual_seed(0)
    net = DDiT(DDiTConfig(vocab_size=V + 1, hidden_size=16, cond_dim=8, n_blocks=1,
                          n_heads=2, max_length=L))
    x = torch.full((4, L), V)
    for den in (MDLMDenoiser(net, time_conditioning=True), HMMDenoiser(
            HMM.random(vocab_size=V, num_states=2, length=L, seed=0))):
        coord = Coordinator(den, Analytic())
        for info_t, info_s in [(1.0, 0.5), (0.6, 0.2), (0.3, 1e-5)]:
            _, log_mass = den.log_probs_with_mass(x, torch.full((4,), info_t))
            info = StepInfo(0, 3, info_t, info_s, coord.schedule)
            p = Analytic().reveal_probability(info, log_mass)
            posterior = (info.alpha_s - info.alpha_t) / (1 - info.alpha_t)
            assert torch.allclose(p, torch.full_like(p, posterior), rtol=1e-5)


def test_score_mass_is_the_log_score_total():
    den = tiny_sedd(0.7)
    x = torch.tensor([[V, 1, V], [0, V, 2]])
    t = torch.tensor([0.8, 0.3])
    with torch.no_grad():
        lp, log_mass = den.log_probs_with_mass(x, t)
        score = den.log_score(x, t)
    masked = x == V
    assert torch.allclose(log_mass[masked], torch.logsumexp(score[..., :V], -1)[masked],
                          atol=1e-5)
    assert torch.allclose(lp, den.log_probs(x, t), atol=1e-6)
    calls = []
    den.backbone.sigma_map.register_forward_pre_hook(lambda *a: calls.append(1))
    den.log_probs_with_mass(x, t)
    assert len(calls) == 1  # marginals and mass from one forward


def test_refused_without_a_score_mass_or_with_alpha_one_zero():
    class NoMass(torch.nn.Module):
        vocab_size, mask_id, supports_causal = V, V, False

        def log_probs(self, x, t, causal=False):
            raise AssertionError("must not be called")

    for strategy in (Analytic(), Euler()):
        with pytest.raises(ValueError, match="score mass"):
            Coordinator(NoMass(), strategy)
    den = tiny_sedd()
    calls = []
    den.backbone.sigma_map.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError, match=r"alpha\(1\) > 0"):
        Coordinator(den, Analytic(), schedule=Cosine()).generate(2, L, 2)
    assert not calls
    with pytest.raises(ValueError, match="t_min"):
        Analytic(t_min=0.0)


def test_guides_draft_only_the_revealed_positions():
    seen = []

    class Recording(Independent):
        def propose(self, ctx, generator):
            seen.append(int(ctx.request.sum()))
            return super().propose(ctx, generator)

    res = Coordinator(tiny_sedd(-1.0), Analytic(), Recording()).generate(
        64, L, 4, generator=torch.Generator().manual_seed(0))
    revealed = [r.revealed for r in res.trace if r.revealed]
    assert seen == revealed and sum(seen) == 64 * L


def test_config_refuses_a_schedule_without_finite_noise_before_loading():
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from experiments.config import ConfigError
    from experiments.session import Session

    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("run", overrides=["strategy=analytic", "schedule=cosine", "steps=[4]"])
    with pytest.raises(ConfigError, match=r"strategy=analytic.*alpha\(1\) > 0"):
        Session(cfg, {"strategy": "analytic"})
