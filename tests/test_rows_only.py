"""Rows-only denoiser calls: the same tokens as full calls, for every strategy and guide."""

import pytest
import torch
from test_ar import tiny_gpt2, word_tokenizer
from test_static_cache import random_denoiser

from copula import CopulaGuide, CopulaISGuide
from decoding import Coordinator
from decoding.guides import Independent
from decoding.sampling import Marginals, Rows
from decoding.strategies import (
    Analytic,
    Ancestral,
    Blocks,
    Confidence,
    Euler,
    LeftToRight,
    ReMDM,
)
from edlm import EnergyGuide
from models.ar.adapter import HFCausalLM

STRATEGIES = {
    "ancestral": lambda: Ancestral(),
    "exact": lambda: Ancestral(mode="exact"),
    "prob": lambda: Confidence("prob"),
    "margin": lambda: Confidence("margin"),
    "entropy": lambda: Confidence("entropy"),
    "left_to_right": lambda: LeftToRight(),
    "remdm": lambda: ReMDM("cap", eta=0.3),
    "remdm_conf": lambda: ReMDM("conf"),
    "blocks_margin": lambda: Blocks(6, Confidence("margin")),
    "blocks_eos": lambda: Blocks(4, Ancestral(), stop_at_eos=True, eos_id=0),
    "analytic": lambda: Analytic(),
    "euler": lambda: Euler(),
}
GUIDES = {
    "none": lambda ar: Independent(),
    "edlm": lambda ar: EnergyGuide(ar, num_candidates=3),
    "edlm_window": lambda ar: EnergyGuide(ar, num_candidates=3, window=(0.0, 0.6)),
    "dcd": lambda ar: CopulaGuide(ar),
    "dcd_is": lambda ar: CopulaISGuide(ar, num_candidates=3),
}


class Recording(torch.nn.Module):
    """Passes calls through and records how many rows each one computed."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.vocab_size, self.mask_id = inner.vocab_size, inner.mask_id
        self.supports_causal, self.supports_rows = True, True
        self.max_length = inner.max_length
        self.computed = []

    def log_probs(self, x, t, causal=False, rows=None):
        self.computed.append(x.numel() if rows is None else int(rows.sum()))
        return self.inner.log_probs(x, t, causal=causal, rows=rows)

    def log_probs_with_mass(self, x, t, rows=None):
        self.computed.append(x.numel() if rows is None else int(rows.sum()))
        return self.inner.log_probs_with_mass(x, t, rows=rows)


@pytest.fixture(scope="module")
def models():
    return random_denoiser(), HFCausalLM(tiny_gpt2(), tokenizer=word_tokenizer())


@pytest.mark.parametrize("guide", list(GUIDES))
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_rows_only_gives_identical_tokens(models, strategy, guide):
    den, ar = models
    prompt = torch.full((12,), den.mask_id)
    prompt[[0, 7]] = torch.tensor([3, 5])  # clamped positions, as for infilling
    out = {}
    for rows_only in (False, True):
        rec = Recording(den)
        coord = Coordinator(rec, STRATEGIES[strategy](), GUIDES[guide](ar), top_p=0.95,
                            rows_only=rows_only)
        res = coord.generate(5, 12, steps=6, prompt=prompt,
                             generator=torch.Generator().manual_seed(11))
        out[rows_only] = (res.tokens, res.nfe, sum(rec.computed))
    assert torch.equal(out[False][0], out[True][0])
    assert out[False][1] == out[True][1]
    assert out[True][2] < out[False][2]  # fewer rows were computed


def test_sedd_mass_with_rows_matches_the_full_call(gen):
    from models.ddit.heads import SEDDDenoiser

    den = SEDDDenoiser(random_denoiser().backbone)
    x = torch.randint(0, den.vocab_size, (3, 12), generator=gen)
    masked = torch.rand(3, 12, generator=gen) < 0.5
    x = x.masked_fill(masked, den.mask_id)
    t = torch.full((3,), 0.7)
    lp, mass = den.log_probs_with_mass(x, t)
    lp_rows, mass_rows = den.log_probs_with_mass(x, t, rows=masked)
    torch.testing.assert_close(lp_rows, lp[masked], atol=1e-6, rtol=0)
    torch.testing.assert_close(mass_rows[masked], mass[masked], atol=1e-5, rtol=1e-6)
    assert torch.isneginf(mass_rows[~masked]).all()


def test_value_independent_steps_ask_only_for_revealed_rows(models):
    den, _ = models
    rec = Recording(den)
    res = Coordinator(rec, Ancestral(mode="exact"), Independent()).generate(
        4, 12, steps=4, generator=torch.Generator().manual_seed(0))
    assert rec.computed == [r.revealed for r in res.trace]


def test_packed_rows_refuse_rows_not_computed():
    data = torch.log_softmax(torch.randn(3, 5), -1)
    rows = torch.tensor([[True, False, True], [False, True, False]])
    packed = Rows(data, rows)
    assert packed.shape == (2, 3, 5)
    torch.testing.assert_close(packed[rows], data)
    marg = Marginals(packed)
    assert marg.shape == (2, 3, 5)
    with pytest.raises(RuntimeError, match="not computed"):
        marg.sample(torch.ones(2, 3, dtype=torch.bool), torch.Generator().manual_seed(0))
