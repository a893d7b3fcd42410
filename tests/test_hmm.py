"""The HMM oracle against brute force: every exact quantity is re-derived by summing over all
V**L sequences (and, for the joint itself, over all H**L hidden paths)."""

import itertools
import math

import pytest
import torch

from decoding.protocols import ARModel, Denoiser
from models.oracle.adapters import HMMAutoregressive, HMMDenoiser
from models.oracle.hmm import HMM, encode

V, H, L = 3, 3, 4
torch.set_num_threads(1)


def _hmms():
    return [HMM.random(V, H, L, seed=1), HMM.shift(V, L, noise=0.1), HMM.sticky(V, 2, L, seed=2)]


@pytest.fixture(params=range(3), ids=["random", "shift", "sticky"])
def hmm(request):
    return _hmms()[request.param]


def _path_sum(hmm):
    """(V**L,) p(x) by summing over every hidden path: independent of the forward algorithm."""
    seqs = hmm.all_sequences()
    p = torch.zeros(seqs.shape[0], dtype=torch.float64)
    for path in itertools.product(range(hmm.num_states), repeat=hmm.length):
        w = hmm.initial[path[0]] * hmm.emission[path[0], seqs[:, 0]]
        for i in range(1, hmm.length):
            w = w * hmm.transition[path[i - 1], path[i]] * hmm.emission[path[i], seqs[:, i]]
        p += w
    return p


def _marginal(hmm, weights, i):
    """(V,) sum of ``weights`` over the sequences grouped by their token at position i."""
    seqs = hmm.all_sequences()
    return torch.zeros(hmm.vocab_size, dtype=torch.float64).index_add_(0, seqs[:, i], weights)


def _condition(hmm, x, positions):
    """Joint restricted to sequences agreeing with x at ``positions``, renormalised."""
    seqs = hmm.all_sequences()
    keep = (seqs[:, positions] == x[positions]).all(-1)
    p = hmm.joint() * keep
    return p / p.sum()


def _random_masks(hmm, gen, n=6):
    x = hmm.sample(n, gen)
    mask = torch.rand(n, hmm.length, generator=gen) < 0.5
    mask[0], mask[1] = True, False  # fully masked and fully known rows
    return x.masked_fill(mask, hmm.mask_id)


def test_joint_matches_path_sum(hmm):
    joint = hmm.joint()
    assert joint.dtype == torch.float64 and joint.shape == (V**L,)
    torch.testing.assert_close(joint, _path_sum(hmm), rtol=1e-12, atol=1e-15)
    assert abs(float(joint.sum()) - 1.0) < 1e-12
    torch.testing.assert_close(hmm.log_prob(hmm.all_sequences()), joint.log())


def test_enumeration_order_and_limit():
    hmm = HMM.random(V, H, L)
    seqs = hmm.all_sequences()
    assert torch.equal(encode(seqs, V), torch.arange(V**L))
    assert torch.equal(seqs[1], torch.tensor([0, 0, 0, 1]))
    with pytest.raises(ValueError, match="enumeration limit"):
        HMM.random(50, 2, 5).joint()


def test_ar_log_probs_are_prefix_ratios(hmm):
    seqs = hmm.all_sequences()
    got = hmm.ar_log_probs(seqs)
    assert got.shape == (V**L, L, V) and got.dtype == torch.float64
    table = hmm.joint().reshape([V] * L)
    for i in range(L):
        prefix = table.sum(dim=tuple(range(i, L))) if i else table.sum()  # p(x_<i)
        nxt = table.sum(dim=tuple(range(i + 1, L))) if i + 1 < L else table  # p(x_<=i)
        idx = tuple(seqs[:, j] for j in range(i))
        expected = nxt[idx].log() - (prefix[idx].log().unsqueeze(-1) if i else prefix.log())
        torch.testing.assert_close(got[:, i], expected.reshape(-1, V).expand(V**L, V))
    # A shorter prefix is scored identically.
    torch.testing.assert_close(hmm.ar_log_probs(seqs[:, :2]), got[:, :2])


def test_masked_marginals_match_enumeration(hmm, gen):
    x = _random_masks(hmm, gen)
    got = hmm.masked_marginals(x)
    assert got.shape == (x.shape[0], L, V) and got.dtype == torch.float64
    for b in range(x.shape[0]):
        known = x[b] != hmm.mask_id
        p = _condition(hmm, x[b], known.nonzero().flatten())
        for i in range(L):
            if known[i]:
                assert got[b, i, x[b, i]] == 0 and torch.isneginf(got[b, i]).sum() == V - 1
            else:
                torch.testing.assert_close(got[b, i].exp(), _marginal(hmm, p, i))


def test_log_prob_marginalises_masks(hmm, gen):
    x = _random_masks(hmm, gen)
    seqs = hmm.all_sequences()
    for b in range(x.shape[0]):
        keep = ((seqs == x[b]) | (x[b] == hmm.mask_id)).all(-1)
        expected = (hmm.joint() * keep).sum().log()
        torch.testing.assert_close(hmm.log_prob(x[b : b + 1])[0], expected)


def test_impossible_evidence():
    hmm = HMM.shift(V, L, noise=0.0)  # the state never stays, so a repeated token is impossible
    x = torch.tensor([[0, 0, 1, 2]])
    assert torch.isneginf(hmm.log_prob(x)).all()
    rows = hmm.ar_log_probs(x)
    assert torch.isneginf(rows[0, 1, 0]) and torch.isfinite(rows[0, 2:].logsumexp(-1)).all()
    with pytest.raises(ValueError, match="probability 0"):
        hmm.masked_marginals(torch.tensor([[0, 0, V, V]]))
    with pytest.raises(ValueError, match="probability 0"):
        hmm.causal_marginals(torch.tensor([[0, 0, V, V]]))


def test_causal_marginals_match_enumeration(hmm, gen):
    x = _random_masks(hmm, gen)
    got = hmm.causal_marginals(x)
    for b in range(x.shape[0]):
        known = x[b] != hmm.mask_id
        for i in range(L):
            if known[i]:
                assert got[b, i, x[b, i]] == 0
                continue
            before = (known & (torch.arange(L) < i)).nonzero().flatten()
            p = _condition(hmm, x[b], before)
            torch.testing.assert_close(got[b, i].exp(), _marginal(hmm, p, i))


def test_short_input_is_prefix_of_full(gen):
    hmm = HMM.random(V, H, L, seed=3)
    x = _random_masks(hmm, gen)[:, :3]
    padded = torch.cat([x, torch.full((x.shape[0], 1), hmm.mask_id)], 1)
    torch.testing.assert_close(hmm.masked_marginals(x), hmm.masked_marginals(padded)[:, :3])


def test_incremental_ar_matches_batch(hmm, gen):
    ar = HMMAutoregressive(hmm)
    x = hmm.sample(5, gen)
    full = ar.log_probs(x)
    first, cache = ar.start(5)
    assert cache.length == 0
    rows = [first.unsqueeze(1)]
    for chunk in x.split([1, 2, 1], dim=1):
        rows.append(ar.extend(cache, chunk))
    assert cache.length == L
    inc = torch.cat(rows, 1)
    torch.testing.assert_close(inc[:, :L], full)
    # The row after the last token is the chain's continuation: still a distribution.
    torch.testing.assert_close(inc[:, L].logsumexp(-1), torch.zeros(5))
    with pytest.raises(ValueError, match="length"):
        ar.extend(cache, x[:, :1])

    ar.crop(cache, 2)
    y = x.clone()
    y[:, 2:] = (x[:, 2:] + 1) % V
    out = ar.extend(cache, y[:, 2:])
    torch.testing.assert_close(out[:, :-1], ar.log_probs(y)[:, 3:])

    index = torch.tensor([4, 0, 0])
    ar.crop(cache, 1)
    ar.reorder(cache, index)
    out = ar.extend(cache, y[index, 1:3])
    torch.testing.assert_close(out[:, :-1], ar.log_probs(y[index])[:, 2:3])


def test_samples_reach_noise_floor(gen):
    hmm = HMM.random(V, H, L, seed=4)
    n = 20_000
    samples = hmm.sample(n, gen)
    assert samples.shape == (n, L) and samples.dtype == torch.long
    floor = hmm.tv_noise_floor(n, generator=gen)
    assert 0 < floor < 0.05
    assert hmm.tv(samples) < 1.5 * floor
    assert hmm.tv(HMM.random(V, H, L, seed=5).sample(n, gen)) > 3 * floor  # TV has power
    assert torch.equal(hmm.sample(7, torch.Generator().manual_seed(0)),
                       hmm.sample(7, torch.Generator().manual_seed(0)))


def test_conditional_joint_and_tv_with_prompt(gen):
    hmm = HMM.sticky(V, 2, L, seed=6)
    prompt = torch.tensor([1, hmm.mask_id, hmm.mask_id, 0])
    cond = hmm.conditional_joint(prompt)
    torch.testing.assert_close(cond, _condition(hmm, prompt, torch.tensor([0, 3])))
    free = torch.full((L,), hmm.mask_id)
    torch.testing.assert_close(hmm.conditional_joint(free), hmm.joint())
    samples = hmm.sample(40_000, gen)
    samples = samples[(samples[:, 0] == 1) & (samples[:, 3] == 0)]  # exact rejection sampler
    assert hmm.tv(samples, prompt) < 1.5 * hmm.tv_noise_floor(samples.shape[0], prompt, gen)
    with pytest.raises(ValueError, match="probability 0"):
        HMM.shift(V, L, noise=0.0).conditional_joint(torch.tensor([0, 0, V, V]))


def test_entropy_and_nll(hmm, gen):
    p = _path_sum(hmm)
    expected = float(-(p[p > 0] * p[p > 0].log()).sum())
    assert math.isclose(hmm.entropy(), expected, rel_tol=1e-10)
    assert math.isclose(hmm.entropy_rate(), expected / L, rel_tol=1e-10)
    x = hmm.sample(5, gen)
    assert math.isclose(hmm.gen_nll(x), float(-(hmm.log_prob(x) / L).mean()), rel_tol=1e-12)


def test_shift_and_sticky_structure(gen):
    x = HMM.shift(5, 12, noise=0.0).sample(200, gen)
    assert set(((x[:, 1:] - x[:, :-1]) % 5).unique().tolist()) <= {1, 2}
    sticky = HMM.sticky(4, 4, 6, stay=0.9, seed=0)
    assert torch.allclose(sticky.transition.diagonal(), torch.full((4,), 0.9, dtype=torch.float64))
    assert torch.equal(HMM.random(V, H, L, seed=9).emission, HMM.random(V, H, L, seed=9).emission)


def test_long_sequences_stay_finite():
    hmm = HMM.random(5, 4, 300, seed=0)
    x = hmm.sample(3, torch.Generator().manual_seed(0))
    assert torch.isfinite(hmm.log_prob(x)).all()
    x[:, ::2] = hmm.mask_id
    lp = hmm.masked_marginals(x)
    assert torch.allclose(lp.logsumexp(-1), torch.zeros(3, 300, dtype=torch.float64), atol=1e-9)


def test_validation_errors():
    good = HMM.random(V, H, L)
    with pytest.raises(ValueError, match="sum to 1"):
        HMM(good.initial * 2, good.transition, good.emission, L)
    with pytest.raises(ValueError, match="shapes"):
        HMM(good.initial, HMM.random(V, 2, L).transition, good.emission, L)
    with pytest.raises(ValueError, match="non-negative"):
        HMM(torch.tensor([1.5, -0.5, 0.0]), good.transition, good.emission, L)
    with pytest.raises(ValueError, match="length"):
        good.log_prob(torch.zeros(1, L + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="ids"):
        good.masked_marginals(torch.full((1, L), V + 1))


def test_adapters_satisfy_protocols(gen):
    hmm = HMM.shift(V, L)
    den, ar = HMMDenoiser(hmm), HMMAutoregressive(hmm)
    assert isinstance(den, Denoiser) and isinstance(ar, ARModel)
    assert (den.vocab_size, den.mask_id, den.max_length) == (V, V, L)
    assert den.supports_causal and not den.time_conditioned and den.tokenizer is None
    assert ar.vocab_size == V and ar.tokenizer is None
    x = _random_masks(hmm, gen)
    t = torch.rand(x.shape[0], generator=gen)
    out = den.log_probs(x, t)
    assert out.shape == (x.shape[0], L, V) and out.dtype == torch.float32
    torch.testing.assert_close(out, hmm.masked_marginals(x).float())
    torch.testing.assert_close(den.log_probs(x, t, causal=True), hmm.causal_marginals(x).float())
    seqs = hmm.sample(4, gen)
    assert ar.log_probs(seqs).dtype == torch.float32
    with pytest.raises(ValueError, match="mask"):
        ar.log_probs(x)
    _, cache = ar.start(x.shape[0])
    with pytest.raises(ValueError, match="mask"):
        ar.extend(cache, x)
