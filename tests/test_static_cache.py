"""The static AR cache: same log-probs and the same DCD samples as the dynamic one."""

import pytest
import torch
from test_ar import V, seqs, tiny_denoiser, tiny_gpt2, word_tokenizer

from copula import CopulaGuide, CopulaISGuide
from decoding import Coordinator
from decoding.strategies import Ancestral, LeftToRight
from models.ar.adapter import HFCausalLM


def pair():
    model = tiny_gpt2()
    return (HFCausalLM(model, tokenizer=word_tokenizer()),
            HFCausalLM(model, tokenizer=word_tokenizer(), cache="static"))


def random_denoiser():
    den = tiny_denoiser(word_tokenizer())
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in den.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return den.eval()


def session(ar, x):
    """start, extend, crop, extend, reorder (repeating rows), then one token at a time."""
    first, cache = ar.start(x.shape[0])
    out = [first, ar.extend(cache, x[:, :5])]
    ar.crop(cache, 2)
    out.append(ar.extend(cache, x[:, 2:7]))
    index = torch.tensor([2, 0, 0, 1])
    ar.reorder(cache, index)
    out.append(ar.extend(cache, x[index, 7:9]))
    for j in range(9, 12):
        out.append(ar.extend(cache, x[index, j : j + 1]))
    assert cache.length == 12 and cache.batch_size == 4
    return out


def test_static_and_dynamic_caches_give_the_same_log_probs(gen):
    dynamic, static = pair()
    x = seqs(gen, length=12)
    for a, b in zip(session(dynamic, x), session(static, x)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # ...and both agree with batch scoring after the crop and the reorder.
    full = dynamic.log_probs(x)
    tail = torch.cat(session(static, x)[3:], dim=1)  # rows predict tokens 8..12
    torch.testing.assert_close(tail[:, :-1], full[[2, 0, 0, 1], 8:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("strategy", [LeftToRight, Ancestral])
@pytest.mark.parametrize("guide", [CopulaGuide, CopulaISGuide])
def test_static_cache_gives_identical_dcd_samples(strategy, guide):
    den = random_denoiser()
    results = []
    for ar in pair():
        coord = Coordinator(den, strategy(), guide(ar))
        res = coord.generate(6, 12, steps=4, generator=torch.Generator().manual_seed(3))
        results.append(res)
    assert torch.equal(results[0].tokens, results[1].tokens)
    assert results[0].nfe == results[1].nfe


def test_cache_options_are_checked():
    with pytest.raises(ValueError, match="cache must be one of"):
        HFCausalLM(tiny_gpt2(), tokenizer=word_tokenizer(), cache="paged")
    with pytest.raises(ValueError, match="needs cache='static'"):
        HFCausalLM(tiny_gpt2(), tokenizer=word_tokenizer(), compile_step=True)
    ar = HFCausalLM(tiny_gpt2(), tokenizer=word_tokenizer(), cache="static", compile_step=True)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            ar.start(2)
    assert ar.vocab_size == V
