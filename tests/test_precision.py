"""bf16 weights against float32 on the embedded models, and the chunked rows-only output head."""

import pytest
import torch

import models.ddit.output_head as output_head
from models import load_ar, load_denoiser
from models.hub import parse_dtype

# Stated tolerance: total variation between the bf16 and float32 marginals of one position.
# Measured on these models: mean 0.004-0.005, worst of 300-500 rows 0.012-0.031.
TV_MEAN, TV_MAX = 0.01, 0.05


def tv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a.exp() - b.exp()).abs().sum(-1)


def noisy_batch(den, gen, b=4, length=128, frac=0.6):
    x = torch.randint(0, den.vocab_size, (b, length), generator=gen)
    masked = torch.rand(b, length, generator=gen) < frac
    return x.masked_fill(masked, den.mask_id), masked


@pytest.fixture(scope="module")
def denoisers():
    return load_denoiser("models/tiny/denoiser"), load_denoiser("models/tiny/denoiser",
                                                                 dtype="bfloat16")


@torch.inference_mode()
def test_bf16_denoiser_marginals_within_tolerance(denoisers, gen):
    d32, d16 = denoisers
    assert d16.backbone.output_layer.linear.weight.dtype == torch.bfloat16
    x, masked = noisy_batch(d32, gen)
    t = torch.full((4,), 0.6)
    a, b = d32.log_probs(x, t), d16.log_probs(x, t)
    assert b.dtype == torch.float32
    d = tv(a, b)[masked]
    assert d.mean() < TV_MEAN and d.max() < TV_MAX


@pytest.mark.parametrize("name", ["ar", "judge"])
@torch.inference_mode()
def test_bf16_ar_models_within_tolerance(name, gen):
    a32 = load_ar(f"models/tiny/{name}")
    a16 = load_ar(f"models/tiny/{name}", dtype="bfloat16")
    assert next(a16.parameters()).dtype == torch.bfloat16
    y = torch.randint(0, a32.vocab_size, (4, 128), generator=gen)
    d = tv(a32.log_probs(y), a16.log_probs(y))
    assert d.mean() < TV_MEAN and d.max() < TV_MAX


def test_dtype_names_are_checked():
    assert parse_dtype("bfloat16") is torch.bfloat16 and parse_dtype(None) is None
    with pytest.raises(ValueError, match="unsupported dtype"):
        parse_dtype("float8")


@torch.inference_mode()
def test_rows_only_head_equals_the_full_rows(denoisers, gen, monkeypatch):
    d32, _ = denoisers
    x, masked = noisy_batch(d32, gen)
    t = torch.full((4,), 0.3)
    ref = torch.log_softmax(d32.backbone(x, d32.noise_input(t))[..., : d32.vocab_size], -1)
    monkeypatch.setattr(output_head, "CHUNK_ELEMENTS", 7 * d32.vocab_size)  # many chunks
    full = d32.log_probs(x, t)
    torch.testing.assert_close(full, ref, atol=1e-5, rtol=1e-5)
    rows = d32.log_probs(x, t, rows=masked)
    assert rows.shape == (int(masked.sum()), d32.vocab_size)
    # Chunks of different row sets may round differently in the last bit, no more.
    torch.testing.assert_close(rows, full[masked], atol=1e-5, rtol=0)
    causal = d32.log_probs(x, t, causal=True, rows=masked)
    torch.testing.assert_close(causal, d32.log_probs(x, t, causal=True)[masked], atol=1e-5,
                               rtol=0)
    assert d32.log_probs(x, t, rows=torch.zeros_like(masked)).shape == (0, d32.vocab_size)
    with pytest.raises(ValueError, match="rows must be"):
        d32.log_probs(x, t, rows=masked.long())


def test_head_keeps_gradients_when_training(gen):
    w = torch.randn(6, 4, requires_grad=True)
    feats = torch.randn(2, 3, 4, generator=gen)
    out = output_head.head_log_probs(feats, w, None, 5)
    out[..., 0].sum().backward()
    assert w.grad is not None and out.shape == (2, 3, 5)
