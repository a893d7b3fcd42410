"""Pairing a denoiser and an AR model on the token ids they share (models.pairing)."""

import pytest
import torch

from copula.dcd import CopulaGuide
from decoding import Coordinator
from decoding.schedules import LogLinear
from decoding.strategies import LeftToRight
from models.ar.adapter import HFCausalLM
from models.pairing import RestrictedAR, RestrictedDenoiser, pair_models
from models.vocab import EngineTokenizer, TokenSpace
from tests.test_ar import PROBES, WORDS, tiny_denoiser, tiny_gpt2, word_tokenizer

V = len(WORDS)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_same_ids_come_back_unchanged():
    d, a = tiny_denoiser(word_tokenizer()), HFCausalLM(tiny_gpt2(), tokenizer=word_tokenizer())
    d2, a2 = pair_models(d, a, probes=PROBES)
    assert d2 is d and a2 is a


def test_a_denoiser_with_an_extra_token_is_cut_to_the_guides_ids():
    extra = word_tokenizer(WORDS + ["<begin>"])  # like Dream's <|beginoftext|> above Qwen's ids
    d = tiny_denoiser(extra, vocab=V + 1)
    a = HFCausalLM(tiny_gpt2(), tokenizer=word_tokenizer())
    d2, a2 = pair_models(d, a, probes=PROBES)
    assert isinstance(d2, RestrictedDenoiser) and a2 is a
    assert d2.vocab_size == V and d2.mask_id == V
    x = torch.full((2, 6), V, dtype=torch.long)
    x[:, 0] = 1
    t = torch.full((2,), 0.5)
    inner_x = torch.where(x == V, torch.full_like(x, V + 1), x)  # the inner mask is V + 1
    want = torch.log_softmax(d.log_probs(inner_x, t)[..., :V], -1)
    torch.testing.assert_close(d2.log_probs(x, t), want)
    rows = torch.zeros(2, 6, dtype=torch.bool)
    rows[:, 2] = True
    torch.testing.assert_close(d2.log_probs(x, t, rows=rows), want[rows])
    assert d2.tokenizer.decode([1, 2]) == "the cat"


def test_an_ar_with_the_mask_as_a_word_loses_it():
    """DiffuGPT-small's mask is GPT-2's token 10541: the guide must not write it."""
    a = HFCausalLM(tiny_gpt2(), tokenizer=word_tokenizer())
    space = TokenSpace([i for i in range(V) if i != 4], mask_token=4, rows=V)
    d = tiny_denoiser(None, vocab=V - 1)
    d.token_space = space  # the denoiser's real ids skip 4 ("on"), its mask
    d.tokenizer = EngineTokenizer(word_tokenizer(), space)
    d2, a2 = pair_models(d, a, probes=["the cat sat a mat"])
    assert d2 is d and isinstance(a2, RestrictedAR) and a2.vocab_size == V - 1
    x = torch.tensor([[1, 2, 3, 4, 5]])  # engine ids: 4 is model id 5 ("a")
    keep = space.ids
    want = torch.log_softmax(a.log_probs(keep[x])[..., keep], -1)
    torch.testing.assert_close(a2.log_probs(x), want)
    first, cache = a2.start(1)
    steps = a2.extend(cache, x)
    torch.testing.assert_close(torch.cat([first[:, None], steps[:, :-1]], 1), want,
                               atol=1e-5, rtol=1e-5)
    assert d.tokenizer.decode([3, 4]) == "sat a"
    assert d.tokenizer("sat a")["input_ids"] == [3, 4]


def test_dcd_on_a_restricted_pair_writes_only_shared_ids():
    extra = word_tokenizer(WORDS + ["<begin>"])
    d, a = pair_models(tiny_denoiser(extra, vocab=V + 1),
                       HFCausalLM(tiny_gpt2(), tokenizer=word_tokenizer()), probes=PROBES)
    coord = Coordinator(d, LeftToRight(), CopulaGuide(a), LogLinear())
    out = coord.generate(num_samples=4, length=8, steps=2, generator=gen())
    assert out.tokens.shape == (4, 8) and int(out.tokens.max()) < V


def test_a_different_tokenizer_is_refused_at_its_first_differing_id():
    swapped = word_tokenizer(WORDS[:5] + ["zebra"] + WORDS[6:])
    a = HFCausalLM(tiny_gpt2(), tokenizer=word_tokenizer())
    with pytest.raises(ValueError, match="id 5 is 'zebra' for the denoiser but 'a'"):
        pair_models(tiny_denoiser(swapped), a, probes=PROBES)


def test_token_space_maps_both_ways():
    space = TokenSpace([0, 1, 2, 5, 6], mask_token=3, rows=8)  # 4 excluded, 7 padding
    assert not space.identity and space.mask_id == 5
    x = torch.tensor([[0, 3, 5, 4]])
    assert space.to_model(x).tolist() == [[0, 5, 3, 6]]
    assert space.to_engine(torch.tensor([0, 5, 3, 6])).tolist() == [0, 3, 5, 4]
    with pytest.raises(ValueError, match=r"ids \[7\] are not real"):
        space.to_engine(torch.tensor([7]))
    logits = torch.arange(8.0).expand(2, 8)
    assert space.columns(logits)[0].tolist() == [0, 1, 2, 5, 6]
    ident = TokenSpace(range(5), mask_token=5, rows=8)
    assert ident.trivial and ident.columns(logits).data_ptr() == logits.data_ptr()


def test_a_session_refuses_a_bad_pair_before_any_weights_load(tmp_path):
    from experiments.config import ConfigError
    from experiments.session import Session
    from tests.test_experiments import compose_run

    with pytest.raises(ConfigError, match="needs an AR model .* but ar=none"):
        Session(compose_run(["guide=dcd", "ar=none"]))
    other = tmp_path / "other"  # a guide checkpoint whose tokenizer differs; no weights at all
    other.mkdir()
    word_tokenizer().save_pretrained(other)
    (other / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="tokenizers disagree: id 0 is"):
        Session(compose_run(["guide=dcd", f"ar.name_or_path={other}"]))


def test_a_restricted_sedd_keeps_the_score_mass_of_the_kept_tokens():
    from models.ddit.backbone import DDiT, DDiTConfig
    from models.ddit.heads import SEDDDenoiser

    torch.manual_seed(0)
    cfg = DDiTConfig(vocab_size=V + 2, hidden_size=16, cond_dim=8, n_blocks=1, n_heads=2,
                     max_length=16)
    d = SEDDDenoiser(DDiT(cfg), tokenizer=word_tokenizer(WORDS + ["<begin>"]))
    d2, _ = pair_models(d, HFCausalLM(tiny_gpt2(), tokenizer=word_tokenizer()), probes=PROBES)
    x = torch.full((1, 5), V, dtype=torch.long)
    t = torch.full((1,), 0.7)
    lp, mass = d.log_probs_with_mass(torch.where(x == V, V + 1, x), t)
    lp2, mass2 = d2.log_probs_with_mass(x, t)
    share = torch.logsumexp(lp[..., :V], -1)
    torch.testing.assert_close(mass2, mass + share)
    torch.testing.assert_close(lp2, torch.log_softmax(lp[..., :V], -1))
    rows = torch.tensor([[False, True, False, True, False]])
    lp3, mass3 = d2.log_probs_with_mass(x, t, rows=rows)
    torch.testing.assert_close(lp3, lp2[rows])
    torch.testing.assert_close(mass3[rows], mass2[rows])
