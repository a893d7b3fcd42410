"""Gen-PPL conventions on hand-computed examples; judge windows against direct computation."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from experiments.config import ConfigError, validate
from experiments.genppl import chunk_windows, target_log_probs, windows
from experiments.metrics import Evaluator, judge_nll
from models.ar.adapter import HFCausalLM

A, B, C, D, EOS, BOS = 0, 1, 2, 3, 4, 5


class BigramJudge:
    """p(next | prev) = P[prev, next]: every conditional is known by hand."""

    def __init__(self, max_length=None):
        self.bos_id, self.vocab_size, self.max_length = BOS, 6, max_length
        p = torch.full((6, 6), 0.1)
        p[BOS] = torch.tensor([0.5, 0.1, 0.1, 0.1, 0.1, 0.1])
        p[A, B], p[B, EOS], p[EOS, C], p[C, EOS], p[EOS, D] = 0.5, 0.5, 0.2, 0.4, 0.2
        p[EOS, EOS] = 0.1
        self.P = p / p.sum(1, keepdim=True)
        self.logP = self.P.log()
        self.calls = []

    def next_log_probs(self, x):
        self.calls.append(("next", x.shape[1]))
        assert self.max_length is None or x.shape[1] <= self.max_length
        return self.logP[x]

    def log_probs(self, x):
        self.calls.append(("bos", x.shape[1]))
        assert self.max_length is None or x.shape[1] <= self.max_length
        prev = torch.cat([torch.full((x.shape[0], 1), BOS), x[:, :-1]], 1)
        return self.logP[prev]


def lp(judge, a, b):
    return float(judge.logP[a, b])


SAMPLE = torch.tensor([[A, B, EOS, C, EOS, D]])


def test_bos_convention_by_hand():
    j = BigramJudge()
    out = Evaluator(j, eos_id=EOS, convention="bos")(SAMPLE)
    # After BOS, up to and including the first EOS: a|BOS, b|a, EOS|b.
    nll = -(lp(j, BOS, A) + lp(j, A, B) + lp(j, B, EOS))
    assert out["judged_tokens"] == 3 and out["convention"] == "bos"
    assert out["gen_nll"] == pytest.approx(nll / 3)
    assert out["entropy"] == pytest.approx(math.log(3))  # a, b, EOS


def test_mdlm_convention_by_hand():
    j = BigramJudge()
    out = Evaluator(j, eos_id=EOS, convention="mdlm")(SAMPLE)
    # No BOS: token 0 unscored; the first EOS counts, the second does not; text after is kept.
    terms = [lp(j, A, B), lp(j, B, EOS), lp(j, EOS, C), lp(j, EOS, D)]
    assert out["judged_tokens"] == 4 and out["convention"] == "mdlm"
    assert out["gen_nll"] == pytest.approx(-sum(terms) / 4)
    # Corpus-level pooling: a second sample adds its terms to the same sums.
    two = torch.cat([SAMPLE, torch.tensor([[C, EOS, EOS, EOS, EOS, EOS]])])
    out2 = Evaluator(j, eos_id=EOS, convention="mdlm")(two)
    terms2 = terms + [lp(j, C, EOS)]
    assert out2["judged_tokens"] == 5 and out2["gen_nll"] == pytest.approx(-sum(terms2) / 5)


def test_mdlm_chunks_of_the_judge_context():
    j = BigramJudge(max_length=3)
    out = Evaluator(j, eos_id=EOS, convention="mdlm")(SAMPLE)
    # Chunks [a b EOS] [c EOS d]: c opens a chunk (context only), the second EOS is unweighted.
    terms = [lp(j, A, B), lp(j, B, EOS), lp(j, EOS, D)]
    assert out["judged_tokens"] == 3 and out["gen_nll"] == pytest.approx(-sum(terms) / 3)
    assert chunk_windows(6, 3) == [(0, 3, 1), (3, 6, 4)]


def test_clamped_prompt_tokens_are_never_scored():
    j = BigramJudge()
    m = 99  # the mask id of the prompt rows
    prompt = torch.tensor([[A, B, m, m, m, m]])
    out = Evaluator(j, eos_id=EOS, convention="bos")(SAMPLE, prompt)
    assert out["judged_tokens"] == 1 and out["gen_nll"] == pytest.approx(-lp(j, B, EOS))
    out = Evaluator(j, eos_id=EOS, convention="mdlm")(SAMPLE, prompt)
    assert out["judged_tokens"] == 3
    assert out["gen_nll"] == pytest.approx(-(lp(j, B, EOS) + lp(j, EOS, C) + lp(j, EOS, D)) / 3)


def test_unknown_convention_fails_before_any_model():
    with pytest.raises(ValueError, match="unknown gen-PPL convention 'gpt'"):
        Evaluator(BigramJudge(), convention="gpt")
    from omegaconf import OmegaConf

    from experiments.config import RunConfig

    cfg = OmegaConf.merge(OmegaConf.structured(RunConfig),
                          {"denoiser": {}, "judge": {}, "strategy": {}, "guide": {},
                           "schedule": {}, "data": {}, "logger": {},
                           "gen_ppl_convention": "gpt"})
    with pytest.raises(ConfigError, match="gen_ppl_convention 'gpt'.*bos, mdlm"):
        validate(cfg)


def test_sliding_windows_cover_every_target_once():
    for length, context, stride in [(30, 8, 4), (9, 8, 3), (10, 8, 8), (25, 5, 1)]:
        plan = windows(length, context, stride)
        covered = [j for _, end, first in plan for j in range(first, end)]
        assert covered == list(range(1, length))
        for start, end, first in plan:
            assert end - start <= context + 1 and first - start >= min(first, context + 1 - stride)


@pytest.fixture(scope="module")
def judge():
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=12, n_positions=8,
                     bos_token_id=11, eos_token_id=11)
    return HFCausalLM(GPT2LMHeadModel(cfg).eval())


def test_windows_match_direct_computation(judge, gen):
    seq = torch.randint(0, 11, (21,), generator=gen).tolist()
    stride = 3
    got = target_log_probs(judge, [seq], bos=True, stride=stride)[0]
    z = [judge.bos_id] + seq
    context = judge.max_length
    ends = list(range(context + 1, len(z), stride)) + [len(z)]
    for j in range(1, len(z)):
        # The rule, restated: a target inside the first window sees its whole prefix (BOS
        # included); a later one is scored in the first window ending after it, which holds
        # the context + 1 ids before that end.
        end = next(e for e in ends if e > j)
        start = 0 if j <= context else end - context - 1
        with torch.no_grad():
            logits = judge.model(torch.tensor([z[start:j]])).logits[0, -1]
        want = torch.log_softmax(logits[: judge.vocab_size].double(), -1)[z[j]]
        assert got[j - 1].item() == pytest.approx(want.item(), abs=1e-5)
        assert j - start >= min(j, context + 1 - stride)


def test_a_sample_that_fits_is_plain_log_probs(judge, gen):
    x = torch.randint(0, 11, (3, 8), generator=gen)  # 8 tokens: BOS + 7 fed = the context
    direct = judge.log_probs(x).double().gather(-1, x[..., None]).squeeze(-1)
    nll, count = judge_nll(judge, x.tolist())
    assert count == 24 and nll == pytest.approx(-float(direct.sum()), rel=1e-6)
    got = target_log_probs(judge, x.tolist(), bos=False)
    nxt = judge.next_log_probs(x).double()
    for r in range(3):
        assert math.isnan(got[r][0])
        want = nxt[r, :-1].gather(-1, x[r, 1:, None]).squeeze(-1)
        torch.testing.assert_close(got[r][1:], want)
