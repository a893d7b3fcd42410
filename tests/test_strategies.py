"""Properties every strategy must have, and each strategy's own contract."""

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from decoding import Coordinator, Cosine, Linear, LogLinear
from decoding.strategies import Ancestral, Blocks, Confidence, LeftToRight, ReMDM
from experiments.config import build
from models import HMM, HMMDenoiser

HMM_ = HMM.random(vocab_size=5, num_states=4, length=12, seed=0)
M = HMM_.mask_id

CONF = Path(__file__).resolve().parent.parent / "conf" / "strategy"


def _from_conf(path: Path):
    """A conf/strategy option built as experiments.run builds it (EOS: token 0 of the HMM)."""
    return lambda: build(OmegaConf.load(path), "strategy", {"strategy": path.stem}, eos_id=0)


# Every option of conf/strategy/ (a new one is tested without an edit here), then variants
# with settings no option has.
STRATEGIES = {p.stem: _from_conf(p) for p in sorted(CONF.glob("*.yaml"))} | {
    "ancestral_exact": lambda: Ancestral(mode="exact"),
    "remdm_rescale": lambda: ReMDM("rescale", eta=0.5),
    "remdm_conf": lambda: ReMDM("conf"),
    "remdm_loop": lambda: ReMDM("cap", eta=0.2, loop=True),
    "blocks_margin": lambda: Blocks(4, inner=Confidence("margin")),
    "blocks_eos": lambda: Blocks(4, stop_at_eos=True, eos_id=0),
}
PROMPT = torch.tensor([2, M, M, 3, M, M, M, M, M, M, 1, M])


def _generate(strategy, steps=6, n=16, seed=0, prompt=PROMPT, schedule=None, **kw):
    coord = Coordinator(HMMDenoiser(HMM_), strategy, schedule=schedule)
    return coord.generate(n, 12, steps, generator=torch.Generator().manual_seed(seed),
                          prompt=prompt, **kw)


@pytest.mark.parametrize("name", STRATEGIES)
def test_common_contract(name):
    # One trace record per interval of the strategy's own time grid: `steps` of them, and one
    # more for samplers that end with a denoise step (SEDD's analytic and Euler).
    records = len(STRATEGIES[name]().times(LogLinear(), 6)) - 1
    assert records in (6, 7)
    res = _generate(STRATEGIES[name]())
    assert res.tokens.shape == (16, 12) and res.tokens.dtype == torch.long
    assert ((res.tokens >= 0) & (res.tokens < HMM_.vocab_size)).all()
    clamped = PROMPT != M
    assert (res.tokens[:, clamped] == PROMPT[clamped]).all()
    again = _generate(STRATEGIES[name]())
    assert torch.equal(res.tokens, again.tokens)
    assert not torch.equal(res.tokens, _generate(STRATEGIES[name](), seed=1).tokens)
    assert len(res.trace) == records and res.nfe["denoiser"] <= records


@pytest.mark.parametrize("name", ["ancestral_exact", "confidence", "margin", "entropy",
                                  "left_to_right"])
@pytest.mark.parametrize("schedule", [LogLinear(), Linear(), Cosine()], ids=type)
def test_reveal_counts_follow_the_schedule(name, schedule):
    steps, n_free = 5, int((PROMPT == M).sum())
    res = _generate(STRATEGIES[name](), steps=steps, schedule=schedule)
    times = schedule.times(steps)
    remaining = [math.floor(n_free * (1 - schedule.revealed_fraction(t)) + 0.5) for t in times]
    expected = [16 * (a - b) for a, b in zip(remaining, remaining[1:])]
    assert [r.revealed for r in res.trace] == expected


def test_left_to_right_reveals_in_order():
    seen = []

    class Spy(LeftToRight):
        def select(self, info, state, generator):
            sel = super().select(info, state, generator)
            seen.append(sel.reveal)
            return sel

    _generate(Spy(), steps=5, prompt=PROMPT.expand(3, -1).clone(), n=3)
    revealed_before = PROMPT != M
    for reveal in seen:
        assert (reveal.any(0) == reveal.all(0)).all()  # same positions in every row
        pos = reveal[0].nonzero().squeeze(-1)
        still_masked = (~revealed_before).nonzero().squeeze(-1)
        assert torch.equal(pos, still_masked[: len(pos)])
        revealed_before = revealed_before | reveal[0]


@pytest.mark.parametrize("schedule", ["cap", "rescale", "conf"])
def test_remdm_runs_past_the_length_and_remasks(schedule):
    res = _generate(ReMDM(schedule, eta=0.3), steps=40, prompt=None)
    assert sum(r.remasked for r in res.trace) > 0
    assert res.trace[-1].remasked == 0
    assert (res.tokens < HMM_.vocab_size).all()


def test_remdm_loop_remasks_only_inside_the_window():
    res = _generate(ReMDM("cap", eta=0.3, loop=True, t_on=0.6, t_off=0.2), steps=50, prompt=None)
    for rec in res.trace:
        if not (rec.t <= 0.6 and rec.s >= 0.2):  # steps inside phase 2 only
            assert rec.remasked == 0
    assert sum(r.remasked for r in res.trace) > 0


def test_blocks_go_left_to_right():
    seen = []

    class Spy(Ancestral):
        def select(self, info, state, generator):
            sel = super().select(info, state, generator)
            seen.append(sel.reveal.nonzero()[:, 1].tolist())
            return sel

    _generate(Blocks(4, inner=Spy(mode="exact")), steps=6, prompt=None, n=2)
    blocks_per_step = [{p // 4 for p in positions} for positions in seen]
    assert blocks_per_step == [{0}, {0}, {1}, {1}, {2}, {2}]


def test_blocks_can_start_after_the_prompt():
    """LLaDA's and Fast-dLLM's blocks tile the generated part: with a 4-token prompt, 8 steps
    over two blocks of 4 reveal one position a step (a prompt block would take steps)."""
    seen = []

    class Spy(Ancestral):
        def select(self, info, state, generator):
            sel = super().select(info, state, generator)
            seen.append(sel.reveal.nonzero()[:, 1].tolist())
            return sel

    prompt = torch.full((12,), M)
    prompt[:4] = 1
    _generate(Blocks(4, inner=Spy(mode="exact"), start="generation"), steps=8, prompt=prompt,
              n=1)
    assert [len(p) for p in seen] == [1] * 8
    assert [{(p - 4) // 4 for p in positions} for positions in seen] == [{0}] * 4 + [{1}] * 4


def test_blocks_stop_at_eos_fills_the_rest():
    res = _generate(Blocks(3, stop_at_eos=True, eos_id=0), steps=4, prompt=None, n=64)
    for row in res.tokens.tolist():
        if 0 in row[:9]:  # an EOS in a finished block (the last block is 9..11)
            first = row.index(0)
            assert all(tok == 0 for tok in row[first:])
    assert any(0 in row[:9] for row in res.tokens.tolist())


def test_skips_forwards_when_nothing_is_revealed():
    res = _generate(Ancestral(), steps=200, prompt=None, n=1)
    assert res.nfe["denoiser"] <= 12  # one forward per step that reveals something
    assert sum(r.revealed for r in res.trace) == 12


def test_batches_are_deterministic_and_counted():
    res = _generate(Ancestral(mode="exact"), n=10, batch_size=4)
    assert res.num_batches == 3 and res.tokens.shape == (10, 12)
    assert res.nfe["denoiser"] == 3 * 6
