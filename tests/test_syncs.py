"""Host reads of tensor values (GPU synchronisations) in the per-step path, counted.

On a GPU every Python read of a tensor's value waits for all queued kernels. The test patches
the ways such a read happens (``item``, ``bool``/``int``/``float``, ``tolist``, ``nonzero``,
``torch.equal``, indexing with a bool mask) and counts them, by call site, during generation.
Checks routed through ``decoding.checks.device_check`` read on a CPU only (on a GPU they are
device-side assertions), so they are counted apart.
"""

import sys
from collections import Counter

import pytest
import torch
from test_ar import tiny_gpt2, word_tokenizer
from test_static_cache import random_denoiser

from decoding import Coordinator
from decoding.guides import Independent
from decoding.strategies import Ancestral, Confidence, LeftToRight
from edlm import EnergyGuide
from models.ar.adapter import HFCausalLM

# Reads the engine needs, per step: whether anything is masked (an empty step draws and
# costs nothing), whether the strategy revealed anything (else no forward), and the number of
# rows to compute and to draw (the denoiser's packed head, the sampler's row chunks).
ALLOWED = {"step", "_step", "head_log_probs", "_chunks"}


class Reads:
    def __init__(self):
        self.sites = Counter()
        self.checks = 0
        self.library = 0  # inside transformers (the AR model's own mask preprocessing)

    def hit(self):
        caller = sys._getframe(2)
        names = []
        frame = caller
        while frame is not None and len(names) < 6:
            names.append(frame.f_code.co_name)
            frame = frame.f_back
        if "device_check" in names:
            self.checks += 1
        elif "transformers" in caller.f_code.co_filename:
            self.library += 1
        else:
            self.sites[caller.f_code.co_name] += 1


def _is_mask(index):
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool and i.dim() > 0
               for i in items)


@pytest.fixture
def reads(monkeypatch):
    rec = Reads()
    for name in ("item", "__bool__", "__int__", "__float__", "tolist", "nonzero"):
        original = getattr(torch.Tensor, name)

        def wrapped(self, *a, _original=original, **k):
            rec.hit()
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    get, equal = torch.Tensor.__getitem__, torch.equal

    def getitem(self, index):
        if _is_mask(index):
            rec.hit()
        return get(self, index)

    def counted_equal(a, b):
        rec.hit()
        return equal(a, b)

    monkeypatch.setattr(torch.Tensor, "__getitem__", getitem)
    monkeypatch.setattr(torch, "equal", counted_equal)
    return rec


def run(strategy, guide, steps):
    coord = Coordinator(random_denoiser(), strategy, guide)
    return coord, steps


@pytest.mark.parametrize("name", ["ancestral", "left_to_right", "confidence", "edlm"])
def test_per_step_host_reads_are_the_needed_ones(name, reads):
    ar = HFCausalLM(tiny_gpt2(), tokenizer=word_tokenizer())
    strategy = {"ancestral": Ancestral(), "left_to_right": LeftToRight(),
                "confidence": Confidence("prob"), "edlm": Ancestral()}[name]
    guide = EnergyGuide(ar, num_candidates=3) if name == "edlm" else Independent()
    coord = Coordinator(random_denoiser(), strategy, guide)
    steps = 8
    before = sum(reads.sites.values())
    coord.generate(4, 16, steps=steps, generator=torch.Generator().manual_seed(0))
    per_step = (sum(reads.sites.values()) - before) / steps
    # Once a run: the trace's counts and ESS, and the final checks (no mask left, clamps kept).
    allowed = ALLOWED | {"generate", "_settle", "_run"}
    if strategy.needs_draft:
        allowed |= {"rows"}  # a step may reveal nothing: compare x to skip the next forward
    outside = {site: n for site, n in reads.sites.items() if site not in allowed}
    assert outside == {}, f"unexpected host reads: {outside}"
    # At most: masked.any, reveal.any, the head's packed rows, and the draws' row chunks
    # (log_q of a value-dependent strategy: one more chunk pass), plus the run's final checks.
    assert per_step <= 5 + 3 / steps, str(sorted(reads.sites.items()))
