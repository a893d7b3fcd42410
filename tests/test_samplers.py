"""Speculative decoding, APD and SMC against the exact HMM oracle (known answers by enumeration).

TV is measured between the empirical law of N samples and the true joint; the noise floor is
the TV of N exact draws.
"""

from pathlib import Path

import pytest
import torch

from decoding import Coordinator
from decoding.guides import APDGuide, SMCGuide, SpeculativeGuide
from decoding.sampling import normalize_rows
from decoding.strategies import Ancestral, Blocks, Confidence, LeftToRight, ReMDM
from models import HMM, HMMAutoregressive, HMMDenoiser

N = 4000
TARGET = HMM.random(vocab_size=3, num_states=4, length=5, seed=2, concentration=0.3)
OTHER = HMM.random(vocab_size=3, num_states=4, length=5, seed=7, concentration=0.3)
STICKY = HMM.sticky(vocab_size=3, num_states=3, length=4, stay=0.85, seed=1)


def run(guide, steps, hmm=TARGET, drafter=None, strategy=None, n=N, seed=0, **kw):
    coord = Coordinator(HMMDenoiser(drafter or hmm), strategy or LeftToRight(), guide, **kw)
    res = coord.generate(n, hmm.length, steps, generator=torch.Generator().manual_seed(seed),
                         batch_size=1000)
    return hmm.tv(res.tokens), res


@pytest.mark.parametrize("gamma,steps", [(1, 1), (3, 1), (3, 2), (8, 3)])
def test_speculative_is_exact_whatever_the_drafter(gamma, steps):
    floor = TARGET.tv_noise_floor(N)
    ar = HMMAutoregressive(TARGET)
    # The drafter is another language: its own samples are far from the target.
    assert run(None, TARGET.length, hmm=TARGET, drafter=OTHER)[0] > floor + 0.1
    tv, res = run(SpeculativeGuide(ar, draft_length=gamma), steps, drafter=OTHER)
    assert tv < floor + 0.02, (tv, floor)
    assert 1.0 < TARGET.length / res.steps_used <= gamma + 1  # tokens per AR verification
    batches = N // 1000
    assert res.nfe["denoiser"] <= batches * steps * res.steps_used * 2
    assert res.nfe["ar_forwards"] <= batches * (TARGET.length + 1)


def test_speculative_q_includes_temperature_and_top_p():
    floor = TARGET.tv_noise_floor(N)
    guide = SpeculativeGuide(HMMAutoregressive(TARGET), draft_length=4)
    for temperature, top_p in ((0.5, 1.0), (1.0, 0.6), (1.7, 0.8)):
        tv, _ = run(guide, 2, temperature=temperature, top_p=top_p)
        assert tv < floor + 0.02, (temperature, top_p, tv, floor)


def test_speculative_follows_a_prefix_prompt_and_refuses_infill():
    m = TARGET.mask_id
    prompt = torch.tensor([1, m, m, m, m])
    guide = SpeculativeGuide(HMMAutoregressive(TARGET), draft_length=2)
    res = Coordinator(HMMDenoiser(OTHER), LeftToRight(), guide).generate(
        N, 5, 1, prompt=prompt, generator=torch.Generator().manual_seed(0))
    floor = TARGET.tv_noise_floor(N, prompt=prompt)
    assert TARGET.tv(res.tokens, prompt=prompt) < floor + 0.02
    with pytest.raises(ValueError, match="infilling"):
        Coordinator(HMMDenoiser(TARGET), LeftToRight(), guide).generate(
            4, 5, 1, prompt=torch.tensor([m, m, 0, m, m]))


def test_apd_trades_speed_for_quality_monotonically():
    floor = TARGET.tv_noise_floor(N)
    ar = HMMAutoregressive(TARGET)
    tvs, speeds = [], []
    for r in (0.0, 0.5, 1.0):
        tv, res = run(APDGuide(ar, mixture_weight=r, lookahead=2), TARGET.length, drafter=OTHER)
        tvs.append(tv)
        speeds.append(TARGET.length / res.steps_used)
    assert tvs[0] < floor + 0.02  # R = 0: every committed token is the AR model's draw
    assert tvs[0] + 0.03 < tvs[1] < tvs[2] - 0.03, tvs
    assert speeds[0] < speeds[1] < speeds[2], speeds
    assert speeds[2] == pytest.approx(2.5)  # R = 1 takes the whole window + 1: 3 then 2 tokens


def test_apd_steps_is_a_maximum_and_argmax_rule_runs():
    ar = HMMAutoregressive(TARGET)
    for accept in ("shared_noise", "argmax"):
        _, res = run(APDGuide(ar, mixture_weight=0.0, lookahead=1, accept=accept), 2, n=200)
        assert res.steps_used <= 2 and res.nfe["denoiser"] <= 2 * 1
        assert res.trace[0].revealed + res.trace[1].revealed == 200 * TARGET.length


@pytest.mark.parametrize("temperature, top_p", [(0.5, 1.0), (1.5, 0.7)])
def test_apd_draws_the_tempered_product_of_experts(temperature, top_p):
    n, r, m = 20000, 0.5, TARGET.mask_id
    prompt = torch.tensor([1, 0, 2, 1, m])  # one generated position: every commit is a draw of π
    guide = APDGuide(HMMAutoregressive(TARGET), mixture_weight=r, lookahead=2)
    res = Coordinator(HMMDenoiser(OTHER), LeftToRight(), guide, temperature=temperature,
                      top_p=top_p).generate(n, 5, 1, prompt=prompt,
                                            generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(res.tokens[:, -1], minlength=3).double() / n
    q = HMMDenoiser(OTHER).log_probs(prompt[None], torch.ones(1))[0, -1].double()
    p = HMMAutoregressive(TARGET).log_probs(prompt[None].clamp(max=2))[0, -1].double()
    keep = torch.isfinite(normalize_rows(q[None], temperature, top_p)[0])
    want = torch.softmax(((r * q + (1 - r) * p) / temperature).masked_fill(~keep, -torch.inf), -1)
    assert 0.5 * (freq - want).abs().sum() < 0.02, (freq, want)


@pytest.mark.parametrize("steps", [1, 2])
def test_smc_error_falls_with_particles(steps):
    floor = STICKY.tv_noise_floor(N)
    ar = HMMAutoregressive(STICKY)
    tvs = [run(SMCGuide(ar, num_particles=k), steps, hmm=STICKY,
               strategy=Ancestral(mode="exact"))[0] for k in (1, 4, 64)]
    assert tvs[0] > tvs[1] + 0.02 and tvs[1] > tvs[2] - 0.005, tvs
    assert tvs[2] < floor + 0.015, (tvs, floor)


def test_smc_resampling_keeps_it_exact_and_reports_ess():
    floor = STICKY.tv_noise_floor(N)
    guide = SMCGuide(HMMAutoregressive(STICKY), num_particles=16, ess_threshold=1.0,
                     resampling="multinomial")
    tv, res = run(guide, 3, hmm=STICKY, strategy=Blocks(2, LeftToRight()))
    assert tv < floor + 0.015, (tv, floor)
    assert all(1.0 <= r.ess <= 16 for r in res.trace)


@pytest.mark.parametrize("guide,strategy", [
    (SpeculativeGuide(HMMAutoregressive(TARGET)), Ancestral()),
    (APDGuide(HMMAutoregressive(TARGET)), Confidence("margin")),
    (SMCGuide(HMMAutoregressive(TARGET)), Confidence("prob")),
    (SMCGuide(HMMAutoregressive(TARGET)), ReMDM()),
])
def test_refused_strategies_fail_before_any_call(guide, strategy):
    with pytest.raises(ValueError, match="strategy"):
        Coordinator(HMMDenoiser(TARGET), strategy, guide)


@pytest.mark.parametrize("kwargs", [dict(draft_length=0), dict(draft_length=1.5)])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="draft_length"):
        SpeculativeGuide(HMMAutoregressive(TARGET), **kwargs)
    for bad in (dict(mixture_weight=1.5), dict(lookahead=0), dict(accept="max")):
        with pytest.raises(ValueError):
            APDGuide(HMMAutoregressive(TARGET), **bad)
    for bad in (dict(num_particles=0), dict(ess_threshold=2.0), dict(resampling="x")):
        with pytest.raises(ValueError):
            SMCGuide(HMMAutoregressive(TARGET), **bad)


def test_smc_infill_reaches_the_true_conditional():
    shift = HMM.shift(vocab_size=4, length=5)
    m = shift.mask_id
    prompt = torch.tensor([1, m, m, m, 0])
    floor = shift.tv_noise_floor(N, prompt=prompt)
    tvs = []
    for k in (1, 64):
        res = Coordinator(HMMDenoiser(shift), Ancestral(mode="exact"),
                          SMCGuide(HMMAutoregressive(shift), num_particles=k)).generate(
            N, 5, 1, prompt=prompt, generator=torch.Generator().manual_seed(0))
        tvs.append(shift.tv(res.tokens, prompt=prompt))
    assert tvs[0] > floor + 0.2 and tvs[1] < floor + 0.015, (tvs, floor)


def test_metrics_keep_num_steps_and_report_what_adaptive_guides_used(tmp_path):
    from hydra import compose, initialize_config_dir

    import experiments.run as runner

    conf = str(Path(__file__).resolve().parent.parent / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("run", overrides=["experiment=hmm_oracle", "num_samples=12",
                                        "batch_size=4", "steps=[2,64]", "guide=apd",
                                        "strategy=left_to_right", "guide.lookahead=1"])
    metrics = runner.run(cfg, tmp_path, {"guide": "apd", "strategy": "left_to_right"})
    assert [m["num_steps"] for m in metrics] == [2, 64]
    capped, free = metrics
    assert capped["steps_used"] <= 2 and capped["nfe_denoiser"] <= 2
    assert capped["tokens_per_step"] == pytest.approx(cfg.length / capped["steps_used"])
    assert 1 <= free["tokens_per_step"] <= 2 < capped["tokens_per_step"]  # M = 1: 1-2 a round
    assert free["nfe_ar"] >= free["steps_used"]


@pytest.mark.parametrize("guide", [SpeculativeGuide(HMMAutoregressive(TARGET), draft_length=3),
                                   APDGuide(HMMAutoregressive(TARGET), mixture_weight=0.0,
                                            lookahead=2)])
def test_rows_at_different_prefixes_share_a_batch_exactly(guide):
    """Rows advance at their own pace over one AR cache; each half keeps its own law."""
    m = TARGET.mask_id
    short, long = torch.tensor([1, m, m, m, m]), torch.tensor([1, 2, 0, m, m])
    prompt = torch.stack([short, long]).repeat(N // 2, 1)  # interleaved in every batch
    res = Coordinator(HMMDenoiser(OTHER), LeftToRight(), guide).generate(
        N, 5, 5, prompt=prompt, generator=torch.Generator().manual_seed(0), batch_size=1000)
    for i, p in enumerate((short, long)):
        tv = TARGET.tv(res.tokens[i::2], prompt=p)
        assert tv < TARGET.tv_noise_floor(N // 2, prompt=p) + 0.02, (i, tv)
