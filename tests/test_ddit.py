"""DDiT backbone and the SEDD/MDLM denoiser heads (tiny random weights, CPU)."""

import math

import pytest
import torch
import torch.nn.functional as F

from decoding.protocols import Denoiser
from models.ddit.backbone import DDiT, DDiTConfig
from models.ddit.heads import MDLMDenoiser, SEDDDenoiser, loglinear_sigma

V = 12  # real tokens; mask id 12, 13 output rows


def tiny_backbone(gen, **kw) -> DDiT:
    cfg = dict(vocab_size=V + 1, hidden_size=32, cond_dim=16, n_blocks=2, n_heads=4, max_length=16)
    cfg.update(kw)
    model = DDiT(DDiTConfig(**cfg))
    # The default init zeroes adaLN and the output layer; random weights exercise every path.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("inv_freq"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


def tokens(gen, b=3, length=10, hi=V + 1):
    return torch.randint(0, hi, (b, length), generator=gen)


def reference_forward(m: DDiT, x, sigma, causal=False):
    """An independent formulation: rotary as complex rotation of (j, j+d/2) pairs, explicit
    softmax attention, per-head loops. Must match DDiT.forward."""
    cfg = m.config
    h_dim, n_h = cfg.hidden_size, cfg.n_heads
    d = h_dim // n_h
    half = 128
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / half)
    feats = torch.cat([torch.cos(sigma[:, None] * freqs), torch.sin(sigma[:, None] * freqs)], -1)
    mlp = m.sigma_map.mlp
    c = F.silu(mlp[2](F.silu(mlp[0](feats))))
    h = m.vocab_embed.embedding[x]
    length = x.shape[1]
    inv = 10000.0 ** (-torch.arange(0, d, 2).float() / d)
    rot = torch.polar(torch.ones(length, d // 2), torch.arange(length)[:, None].float() * inv)

    def rope(t):  # (B, L, d) -> (B, L, d)
        z = torch.complex(t[..., : d // 2], t[..., d // 2 :]) * rot
        return torch.cat([z.real, z.imag], -1)

    def ln(t, w):
        mu, var = t.mean(-1, keepdim=True), t.var(-1, unbiased=False, keepdim=True)
        return (t - mu) / torch.sqrt(var + 1e-5) * w

    allowed = torch.ones(length, length).tril().bool() if causal else None
    for blk in m.blocks:
        mod = blk.adaLN_modulation(c)
        s1, sc1, g1, s2, sc2, g2 = (mod[:, i * h_dim : (i + 1) * h_dim, None] for i in range(6))
        y = ln(h, blk.norm1.weight) * (1 + sc1.transpose(1, 2)) + s1.transpose(1, 2)
        w_q, w_k, w_v = blk.attn_qkv.weight.split(h_dim)
        heads = []
        for j in range(n_h):
            sl = slice(j * d, (j + 1) * d)
            q, k, v = rope(y @ w_q[sl].T), rope(y @ w_k[sl].T), y @ w_v[sl].T
            score = q @ k.transpose(1, 2) / math.sqrt(d)
            if allowed is not None:
                score = score.masked_fill(~allowed, float("-inf"))
            heads.append(score.softmax(-1) @ v)
        h = h + g1.transpose(1, 2) * blk.attn_out(torch.cat(heads, -1))
        y = ln(h, blk.norm2.weight) * (1 + sc2.transpose(1, 2)) + s2.transpose(1, 2)
        h = h + g2.transpose(1, 2) * blk.mlp[2](F.gelu(blk.mlp[0](y), approximate="tanh"))
    shift, scale = m.output_layer.adaLN_modulation(c).chunk(2, -1)
    y = ln(h, m.output_layer.norm_final.weight) * (1 + scale[:, None]) + shift[:, None]
    return m.output_layer.linear(y)


@pytest.mark.parametrize("causal", [False, True])
def test_forward_matches_independent_reference(gen, causal):
    m = tiny_backbone(gen)
    x, sigma = tokens(gen), torch.rand(3, generator=gen) * 5
    with torch.no_grad():
        out = m(x, sigma, causal=causal)
        ref = reference_forward(m, x, sigma, causal=causal)
    assert out.shape == (3, 10, V + 1) and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=2e-4, rtol=2e-4)


def test_causal_rows_ignore_future_tokens(gen):
    m = tiny_backbone(gen)
    x, sigma = tokens(gen), torch.rand(3, generator=gen)
    with torch.no_grad():
        base = m(x, sigma, causal=True)
        for i in range(x.shape[1] - 1):
            x2 = x.clone()
            x2[:, i + 1 :] = (x2[:, i + 1 :] + 1) % (V + 1)
            out = m(x2, sigma, causal=True)
            torch.testing.assert_close(out[:, : i + 1], base[:, : i + 1], atol=1e-5, rtol=1e-5)
        # Bidirectional mode does see the future: the same edit moves row 0.
        x2 = x.clone()
        x2[:, 1:] = (x2[:, 1:] + 1) % (V + 1)
        assert not torch.allclose(m(x2, sigma)[:, 0], m(x, sigma)[:, 0])


def test_bf16_autocast_runs_close(gen):
    m = tiny_backbone(gen)
    x, sigma = tokens(gen), torch.rand(3, generator=gen)
    with torch.no_grad():
        full = m(x, sigma)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = m(x, sigma)
    assert half.dtype == torch.float32
    assert (half - full).abs().max() < 0.1 * full.abs().max()


def test_config_validation_and_length_limit(gen):
    with pytest.raises(ValueError, match="divisible"):
        DDiTConfig(vocab_size=5, hidden_size=30, n_heads=4)
    m = tiny_backbone(gen, max_length=8)
    with pytest.raises(ValueError, match="max_length"):
        m(tokens(gen, length=9), torch.zeros(3))


def test_fresh_model_starts_at_zero_logits():
    m = DDiT(DDiTConfig(vocab_size=V + 1, hidden_size=16, cond_dim=8, n_blocks=1, n_heads=2))
    out = m(torch.zeros(2, 4, dtype=torch.long), torch.ones(2))
    assert torch.count_nonzero(out) == 0


def test_mdlm_subs_normalised_and_time_free(gen):
    den = MDLMDenoiser(tiny_backbone(gen), time_conditioning=False)
    assert isinstance(den, Denoiser)
    assert (den.vocab_size, den.mask_id, den.supports_causal, den.max_length) == (V, V, True, 16)
    x = tokens(gen)
    with torch.inference_mode():
        a = den.log_probs(x, torch.full((3,), 0.9))
        b = den.log_probs(x, torch.full((3,), 0.1))
        c = den.log_probs(x, 0.5, causal=True)
    assert a.shape == (3, 10, V) and a.dtype == torch.float32
    torch.testing.assert_close(a.exp().sum(-1), torch.ones(3, 10))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(c.exp().sum(-1), torch.ones(3, 10))


def test_mdlm_time_conditioned_uses_sigma(gen):
    den = MDLMDenoiser(tiny_backbone(gen), time_conditioning=True)
    x = tokens(gen)
    with torch.no_grad():
        a, b = den.log_probs(x, torch.full((3,), 0.9)), den.log_probs(x, torch.full((3,), 0.1))
        ref = den.backbone(x, loglinear_sigma(torch.full((3,), 0.9)))
    assert not torch.allclose(a, b)
    torch.testing.assert_close(a, torch.log_softmax(ref[..., :V], -1))


def test_sedd_normalised_score_gives_marginals(gen):
    den = SEDDDenoiser(tiny_backbone(gen), eps=1e-3)
    x = tokens(gen)
    t = torch.tensor([0.2, 0.6, 1.0])
    sigma = -torch.log(1 - (1 - 1e-3) * t)
    torch.testing.assert_close(den.noise_input(t), sigma)
    with torch.no_grad():
        lp = den.log_probs(x, t)
        score = den.log_score(x, t)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(3, 10))
    # The score's offsets are per-row constants (or sit in the mask column): at masked
    # positions renormalising the real columns of the full SEDD output gives the same marginals.
    masked = x == den.mask_id
    assert masked.any()
    torch.testing.assert_close(torch.log_softmax(score[..., :V], -1)[masked], lp[masked])
    assert torch.all(score.gather(-1, x[..., None]) == 0)


def test_denoiser_input_errors(gen):
    den = MDLMDenoiser(tiny_backbone(gen))
    with pytest.raises(ValueError, match="max_length"):
        den.log_probs(tokens(gen, length=17), 0.5)
    with pytest.raises(ValueError, match="token ids"):
        den.log_probs(torch.full((2, 4), V + 1), 0.5)
    with pytest.raises(ValueError, match="token ids"):
        den.log_probs(torch.full((2, 4), -1), 0.5)
    with pytest.raises(ValueError, match=r"\(B,\)"):
        den.log_probs(tokens(gen), torch.zeros(2))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        den.log_probs(tokens(gen), torch.full((3,), 1.5))
    with pytest.raises(TypeError):
        den.log_probs(tokens(gen).float(), 0.5)
