"""The threshold strategy (Fast-dLLM) and the greedy guide, with known answers on the HMM oracle."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from decoding import Coordinator, LogLinear, StepInfo, StepState
from decoding.guides import Greedy
from decoding.strategies import Blocks, Threshold
from experiments.config import ConfigError, build
from models import HMM, HMMDenoiser

HMM_ = HMM.random(vocab_size=5, num_states=4, length=12, seed=0)
M = HMM_.mask_id
L = HMM_.length


class Counting(HMMDenoiser):
    """The exact denoiser, counting its calls and recording the times it is called at."""

    def __init__(self, hmm, time_conditioned=False):
        super().__init__(hmm)
        self.time_conditioned = time_conditioned
        self.calls, self.seen = 0, []

    def log_probs(self, x, t=None, causal=False):
        self.calls += 1
        self.seen.append((x.clone(), t.clone()))
        return super().log_probs(x, t, causal)


class Spy(Threshold):
    """Records what each step saw and chose."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.steps = []

    def select(self, info, state, generator):
        sel = super().select(info, state, generator)
        self.steps.append((info.is_last, state.masked.clone(), state.draft.clone(),
                           state.draft_log_q.clone(), sel.reveal.clone()))
        return sel


def _run(strategy, steps, n=8, seed=0, guide=None, den=None, **kw):
    coord = Coordinator(den or HMMDenoiser(HMM_), strategy, guide)
    return coord.generate(n, L, steps, generator=torch.Generator().manual_seed(seed), **kw)


def _state(conf, masked=None):
    conf = torch.tensor(conf, dtype=torch.float64)
    masked = torch.ones_like(conf, dtype=torch.bool) if masked is None else torch.tensor(masked)
    return StepState(x=torch.zeros(conf.shape, dtype=torch.long), masked=masked,
                     free=torch.ones_like(masked), confidence=torch.zeros_like(conf),
                     draft=torch.zeros(conf.shape, dtype=torch.long), draft_log_q=conf.log())


def _select(strategy, conf, masked=None, last=False):
    info = StepInfo(1 if last else 0, 2, 1.0, 0.5, LogLinear())
    return strategy.select(info, _state(conf, masked), torch.Generator()).reveal.tolist()


def test_threshold_rule_known_answers():
    conf = [[0.95, 0.5, 0.92, 0.3], [0.4, 0.6, 0.2, 0.1]]
    assert _select(Threshold(0.9), conf) == [[True, False, True, False],
                                             [False, True, False, False]]  # none: the best one
    assert _select(Threshold(0.9, min_per_step=3), conf) == [[True, True, True, False],
                                                             [True, True, True, False]]
    assert _select(Threshold(0.9), [[0.9, 0.95, 0.2]], [[True, False, True]]) == \
        [[True, False, False]]  # >= tau counts; unmasked positions never chosen
    assert _select(Threshold(0.9), conf, last=True) == [[True] * 4] * 2  # the cap


def test_factor_rule_known_answers():
    # n-th most confident passes when c_(n) >= 1 - f/(n+1): 0.99 >= .5, 0.9 >= .667, 0.8 >= .75,
    # 0.6 < 0.8, so n = 3.
    assert _select(Threshold(factor=1.0), [[0.6, 0.99, 0.8, 0.9]]) == [[False, True, True, True]]
    # only the last fails: one is committed (the authors' code would commit both)
    assert _select(Threshold(factor=1.0), [[0.5, 0.95]]) == [[False, True]]
    assert _select(Threshold(factor=1.0), [[0.2, 0.3]]) == [[False, True]]  # at least one
    assert _select(Threshold(factor=3.0), [[0.2, 0.3]]) == [[True, True]]  # 0.2 >= 1 - 3/3
    assert Threshold(0.5, factor=1.0).passing(torch.tensor([[0.6, 0.55]], dtype=torch.float64),
                                              torch.ones(1, 2, dtype=torch.bool)).item() == 1


def test_tau_one_commits_one_position_per_step():
    res = _run(Threshold(1.0, min_per_step=1), steps=L)
    assert [r.revealed for r in res.trace] == [8] * L
    assert res.nfe["denoiser"] == L and res.steps_per_sample.tolist() == [L] * 8


def test_small_tau_commits_everything_at_once():
    res = _run(Threshold(1e-9), steps=L)
    assert res.trace[0].revealed == 8 * L and res.nfe["denoiser"] == 1
    assert res.steps_used == 1.0


def test_chosen_positions_are_exactly_those_above_tau():
    spy = Spy(0.5)
    res = _run(spy, steps=L, n=32)
    assert res.steps_used < L  # several positions pass at some steps
    several = 0
    for _, masked, _, log_q, reveal in spy.steps:
        conf = log_q.exp()
        above = masked & (conf >= 0.5)
        for b in range(masked.shape[0]):
            if not masked[b].any():
                assert not reveal[b].any()
            elif above[b].any():
                assert torch.equal(reveal[b], above[b])
                several += int(above[b].sum() > 1)
            else:  # none passes: the most confident one
                best = conf[b].masked_fill(~masked[b], -1).argmax()
                assert reveal[b].nonzero().squeeze(-1).tolist() == [best.item()]
    assert several > 0


def test_sampled_confidence_is_the_exact_probability_of_the_draw():
    spy = Spy(0.9)
    _run(spy, steps=L, n=16)
    _, masked, draft, log_q, _ = spy.steps[0]
    truth = HMMDenoiser(HMM_).log_probs(torch.full((16, L), M)).double()
    want = truth.gather(-1, draft[..., None]).squeeze(-1)
    assert torch.allclose(log_q[masked], want[masked], atol=1e-6)


def test_steps_is_a_cap_and_steps_used_is_reported():
    res = _run(Threshold(1.0), steps=4)
    assert [r.revealed for r in res.trace] == [8, 8, 8, 8 * (L - 3)]  # the cap completes
    assert res.steps_used == 4
    res = _run(Threshold(0.5), steps=L, n=32)
    used = res.steps_per_sample
    assert (used <= L).all() and res.nfe["denoiser"] == used.max() <= L
    assert used.min() < used.max()  # data-dependent, per sample
    assert res.nfe["denoiser"] == sum(r.denoiser_forwards for r in res.trace)


def test_greedy_is_the_argmax_with_the_top_probability_as_confidence():
    den = HMMDenoiser(HMM_)
    one = _run(Threshold(1e-9), steps=L, guide=Greedy(), n=2)
    marg = den.log_probs(torch.full((1, L), M))[0]
    assert (one.tokens == marg.argmax(-1)).all()  # one step: the mode of each marginal
    spy = Spy(1.0)
    res = _run(spy, steps=L, guide=Greedy(), n=2, seed=5)
    x = torch.full((1, L), M)  # by hand: the most confident position, its most probable token
    for _, _, _, log_q, reveal in spy.steps:
        lp = den.log_probs(x)[0].double()
        masked = x[0] == M
        top = lp.max(-1)
        assert torch.allclose(log_q[0][masked], top.values[masked], atol=1e-6)
        pos = top.values.masked_fill(~masked, -math.inf).argmax()
        assert reveal[0].nonzero().squeeze(-1).tolist() == [pos.item()]
        x[0, pos] = top.indices[pos]
    assert torch.equal(res.tokens, x.expand(2, -1))
    assert torch.equal(res.tokens, _run(Threshold(1.0), steps=L, guide=Greedy(), n=2).tokens)


def test_inside_blocks_rows_move_on_when_their_block_is_done():
    tight = _run(Blocks(4, Threshold(1.0)), steps=6)  # 2 steps per block: 1, then the rest
    assert [r.revealed for r in tight.trace] == [8, 24] * 3
    fast = _run(Blocks(4, Threshold(1e-9)), steps=6)
    assert [r.revealed for r in fast.trace] == [32, 32, 32, 0, 0, 0]
    assert fast.nfe["denoiser"] == 3 and fast.steps_used == 3
    spy = Spy(0.5)
    res = _run(Blocks(4, spy), steps=L, n=32)
    assert res.steps_used < L
    done = torch.zeros(32, L, dtype=torch.bool)
    for *_, reveal in spy.steps:
        for b in range(32):
            pos = reveal[b].nonzero().squeeze(-1)
            if len(pos):
                block = int(pos[0]) // 4
                assert (pos // 4 == block).all()  # one block per row and step
                assert done[b, : 4 * block].all()  # every earlier block finished
        done |= reveal
    assert done.all()


def test_blocks_that_do_not_divide_the_length_and_stop_at_eos():
    res = _run(Blocks(5, Threshold(0.5)), steps=3, n=16)  # blocks 5, 5, 2
    assert (res.tokens != M).all() and (res.steps_per_sample <= 3).all()
    res = _run(Blocks(3, Threshold(0.5), stop_at_eos=True, eos_id=0), steps=L, n=64)
    for row in res.tokens.tolist():
        if 0 in row[:9]:
            assert all(tok == 0 for tok in row[row.index(0):])
    assert any(0 in row[:9] for row in res.tokens.tolist())


def test_time_conditioned_denoiser_gets_each_rows_masked_fraction():
    den = Counting(HMM_, time_conditioned=True)
    _run(Threshold(0.5), steps=L, n=4, den=den)
    assert len(den.seen) > 1
    sched = LogLinear()
    for x, t in den.seen:
        frac = (x == M).double().mean(1).clamp(min=1e-3)
        assert torch.allclose(t.double(), sched.time_at(1.0 - frac), atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(threshold=0.0), "threshold"), (dict(threshold=1.5), "threshold"),
    (dict(threshold=-0.1), "threshold"), (dict(threshold=float("nan")), "threshold"),
    (dict(factor=0.0), "factor"), (dict(factor=-1.0), "factor"),
    (dict(factor=float("inf")), "factor"), (dict(min_per_step=0), "min_per_step"),
    (dict(min_per_step=1.5), "min_per_step"), (dict(min_per_step=True), "min_per_step"),
])
def test_bad_settings_fail_clearly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Threshold(**kwargs)
    node = OmegaConf.create({"_target_": "decoding.strategies.threshold.Threshold", **kwargs})
    with pytest.raises(ConfigError, match=f"strategy=threshold.*{match}"):
        build(node, "strategy", {"strategy": "threshold"})


def test_bad_input_fails_before_any_model_call():
    den = Counting(HMM_)
    with pytest.raises(ValueError, match="one step per block"):
        _run(Blocks(4, Threshold()), steps=2, den=den)
    with pytest.raises(ValueError, match="steps"):
        _run(Threshold(), steps=0, den=den)
    assert den.calls == 0


def test_benchmark_quick(capsys):
    import importlib
    import sys
    from pathlib import Path

    bench = str(Path(__file__).resolve().parents[1] / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    rows = importlib.import_module("threshold").main(["--quick", "--thresholds", "0.9"])
    assert [r["method"] for r in rows] == ["confidence/2", "threshold@0.9"] * 2
    for base, thr in zip(rows[::2], rows[1::2]):
        assert base["forwards"] == 16 and base["steps_used"] == 16  # two per step, L = 32
        assert 1 <= thr["steps_used"] <= thr["forwards"] <= 32 and "passed" in thr
        assert math.isfinite(thr["gen_ppl"]) and thr["gen_ppl_se"] > 0
    assert "target" in capsys.readouterr().out
