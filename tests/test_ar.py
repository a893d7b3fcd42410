"""HFCausalLM over a tiny random GPT-2, and the shared-tokenizer check."""

from types import SimpleNamespace

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from decoding.protocols import ARModel
from models.ar.adapter import HFCausalLM
from models.ar.loading import load_ar
from models.ddit.backbone import DDiT, DDiTConfig
from models.ddit.heads import MDLMDenoiser
from models.tokenizer_check import check_shared_tokenizer

WORDS = ["<eos>", "the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far"]
V = len(WORDS)  # 10 real tokens; the denoiser's mask id is 10
PROBES = ["the cat sat on a mat", "a dog ran far"]


def tiny_gpt2(vocab=V + 6, bos=0):
    # Six padded embedding rows, as real models often have: the adapter must hide them.
    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=vocab,
        n_positions=32,
        bos_token_id=bos,
        eos_token_id=bos,
    )
    return GPT2LMHeadModel(cfg).eval()


def word_tokenizer(words=WORDS):
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", bos_token="<eos>", unk_token="<eos>"
    )


def tiny_denoiser(tokenizer=None, vocab=V):
    cfg = DDiTConfig(
        vocab_size=vocab + 1, hidden_size=16, cond_dim=8, n_blocks=1, n_heads=2, max_length=16
    )
    return MDLMDenoiser(DDiT(cfg), tokenizer=tokenizer)


@pytest.fixture(scope="module")
def ar():
    return HFCausalLM(tiny_gpt2(), tokenizer=word_tokenizer())


def seqs(gen, b=3, length=9):
    return torch.randint(0, V, (b, length), generator=gen)


def test_batch_scores_match_incremental_path(ar, gen):
    assert isinstance(ar, ARModel) and ar.vocab_size == V and ar.bos_id == 0
    x = seqs(gen)
    full = ar.log_probs(x)
    assert full.shape == (3, 9, V) and full.dtype == torch.float32
    torch.testing.assert_close(full.exp().sum(-1), torch.ones(3, 9))
    first, cache = ar.start(3)
    torch.testing.assert_close(first, full[:, 0], atol=1e-5, rtol=1e-5)
    a = ar.extend(cache, x[:, :4])
    b = ar.extend(cache, x[:, 4:])
    assert cache.length == 9
    inc = torch.cat([a, b], dim=1)  # row j predicts token j+1
    torch.testing.assert_close(inc[:, :-1], full[:, 1:], atol=1e-5, rtol=1e-5)
    # Chunked batch scoring gives the same rows.
    chunked = HFCausalLM(ar.model, tokenizer=ar.tokenizer, max_batch_tokens=9).log_probs(x)
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=1e-5)


def test_crop_then_extend_again(ar, gen):
    x = seqs(gen)
    full = ar.log_probs(x)
    _, cache = ar.start(3)
    ar.extend(cache, seqs(gen, length=6))  # a different continuation, then forget it
    ar.crop(cache, 0)
    assert cache.length == 0
    out = ar.extend(cache, x[:, :5])
    torch.testing.assert_close(out[:, :-1], full[:, 1:5], atol=1e-5, rtol=1e-5)
    ar.crop(cache, 2)
    out = ar.extend(cache, x[:, 2:7])
    assert cache.length == 7
    torch.testing.assert_close(out[:, :-1], full[:, 3:7], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="crop length"):
        ar.crop(cache, 8)


def test_reorder_selects_and_repeats_rows(ar, gen):
    x = seqs(gen)
    full = ar.log_probs(x)
    _, cache = ar.start(3)
    ar.extend(cache, x[:, :4])
    index = torch.tensor([2, 2, 0, 1])
    ar.reorder(cache, index)
    assert cache.batch_size == 4
    out = ar.extend(cache, x[index, 4:8])
    torch.testing.assert_close(out[:, :-1], full[index, 5:8], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="rows"):
        ar.extend(cache, x[:, 8:])
    with pytest.raises(ValueError, match="index"):
        ar.reorder(cache, torch.tensor([4]))


def test_bad_inputs_rejected(ar, gen):
    with pytest.raises(ValueError, match="mask id"):
        ar.log_probs(torch.full((1, 3), V))  # the denoiser's mask id
    _, cache = ar.start(1)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        ar.extend(cache, torch.tensor([[V + 3]]))
    with pytest.raises(ValueError, match="maximum"):
        ar.log_probs(torch.zeros(1, 33, dtype=torch.long))  # BOS + 32 fed > n_positions
    model = tiny_gpt2()
    model.config.bos_token_id = None
    with pytest.raises(ValueError, match="BOS"):
        HFCausalLM(model)
    assert HFCausalLM(model, bos_id=1, vocab_size=50).vocab_size == V + 6


def test_load_ar_from_folder(tmp_path, gen):
    tiny_gpt2().save_pretrained(tmp_path / "gpt")
    word_tokenizer().save_pretrained(tmp_path / "gpt")
    loaded = load_ar(tmp_path / "gpt", dtype="float32")
    assert loaded.vocab_size == V and loaded.tokenizer is not None
    x = seqs(gen)
    ref = HFCausalLM(tiny_gpt2(), tokenizer=word_tokenizer())
    torch.testing.assert_close(loaded.log_probs(x), ref.log_probs(x))


def test_shared_tokenizer_passes(ar):
    check_shared_tokenizer(tiny_denoiser(word_tokenizer()), ar, probes=PROBES)


def test_shared_tokenizer_vocab_mismatch(ar):
    with pytest.raises(ValueError, match="vocabulary sizes differ"):
        check_shared_tokenizer(tiny_denoiser(vocab=V + 2), ar, probes=PROBES)


def test_shared_tokenizer_mask_inside_ar_vocab(ar):
    fake = SimpleNamespace(vocab_size=V, mask_id=3, tokenizer=None)
    with pytest.raises(ValueError, match="mask id 3"):
        check_shared_tokenizer(fake, ar)


def test_shared_tokenizer_different_ids(ar):
    swapped = word_tokenizer(WORDS[:1] + WORDS[2:3] + WORDS[1:2] + WORDS[3:])  # cat <-> the
    with pytest.raises(ValueError, match="the cat sat"):
        check_shared_tokenizer(tiny_denoiser(swapped), ar, probes=PROBES)


def test_shared_tokenizer_without_tokenizers_warns(ar):
    with pytest.warns(UserWarning, match="no tokenizer"):
        check_shared_tokenizer(tiny_denoiser(None), ar)


def test_load_ar_offline_miss_is_clear():
    with pytest.raises(OSError, match="HF_HUB_OFFLINE"):
        load_ar("no-such-owner-xyz/no-such-model")


def test_tokenizer_listing_the_mask_last_is_shared():
    # Diffusion tokenizers often list <mask> as their last id (V): real vocabulary stays V.
    tok = word_tokenizer(WORDS + ["<mask>"])
    tok.mask_token = "<mask>"
    ar = HFCausalLM(tiny_gpt2(vocab=V + 1), tokenizer=tok)
    assert ar.vocab_size == V
    check_shared_tokenizer(tiny_denoiser(tok), ar, probes=PROBES)
    with pytest.raises(ValueError, match="tokenizer has 12 tokens"):
        tiny_denoiser(word_tokenizer(WORDS + ["x", "y"]))


def tiny_windowed(window=3, layers=2, positions=40, cache="dynamic"):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    cfg = MistralConfig(
        vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=2, sliding_window=window,
        max_position_embeddings=positions, tie_word_embeddings=True, bos_token_id=0,
        eos_token_id=0,
    )
    return HFCausalLM(MistralForCausalLM(cfg).eval(), tokenizer=word_tokenizer(), cache=cache)


def test_windowed_model_sees_exactly_its_context(gen):
    # 2 layers of 3-position windows: row i depends on inputs i-4 .. i (input i = x_{i-1}),
    # so on tokens x_{i-5} .. x_{i-1}, and on BOS only for i <= 4.
    ar = tiny_windowed()
    assert ar.context == 5 and HFCausalLM(tiny_gpt2()).context is None
    x = seqs(gen, b=2, length=24)
    base = ar.log_probs(x)
    for j in (3, 10, 17):
        y = x.clone()
        y[:, j] = (y[:, j] + 1) % V
        changed = (ar.log_probs(y) - base).abs().amax(dim=(0, 2)) > 1e-6
        assert changed.nonzero().flatten().tolist() == list(range(j + 1, j + 6))


def test_one_position_window_is_a_bigram_model(gen):
    ar = tiny_windowed(window=1, layers=1)
    assert ar.context == 1
    x = seqs(gen, b=2, length=12)
    base = ar.log_probs(x)
    y = x.clone()
    y[:, 5] = (y[:, 5] + 1) % V
    changed = (ar.log_probs(y) - base).abs().amax(dim=(0, 2)) > 1e-6
    assert changed.nonzero().flatten().tolist() == [6]


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize(("window", "layers"), [(3, 2), (1, 1)])
def test_windowed_cache_matches_batch_after_crop_and_reorder(gen, cache, window, layers):
    # The cache keeps every position: crossing the window, cropping back behind it and
    # reordering rows all give the batch path's rows.
    ar = tiny_windowed(window=window, layers=layers, cache=cache)
    x = seqs(gen, b=3, length=20)
    full = ar.log_probs(x)
    first, cache = ar.start(3)
    torch.testing.assert_close(first, full[:, 0], atol=1e-5, rtol=1e-5)
    out = ar.extend(cache, x[:, :16])
    torch.testing.assert_close(out[:, :-1], full[:, 1:16], atol=1e-5, rtol=1e-5)
    ar.crop(cache, 6)  # behind the window of the last fed position
    out = ar.extend(cache, x[:, 6:12])
    torch.testing.assert_close(out[:, :-1], full[:, 7:12], atol=1e-5, rtol=1e-5)
    index = torch.tensor([1, 1, 2])
    ar.reorder(cache, index)
    out = ar.extend(cache, x[index, 12:20])
    torch.testing.assert_close(out[:, :-1], full[index, 13:20], atol=1e-5, rtol=1e-5)


def test_token_log_probs_gathers_log_probs(ar, gen, monkeypatch):
    import models.ar.adapter as ar_module

    x = seqs(gen, b=5, length=11)
    full = ar.log_probs(x).gather(-1, x[..., None]).squeeze(-1)
    monkeypatch.setattr(ar_module, "SLICE_ELEMENTS", 3 * V)  # several slices per forward
    small = HFCausalLM(ar.model, tokenizer=ar.tokenizer, max_batch_tokens=22)  # 2-row chunks
    assert torch.equal(small.token_log_probs(x), full)
    assert ar.token_log_probs(x[:, :0]).shape == (5, 0)
