"""Checkpoint formats: SEDD, MDLM and duet-ddit round trips, strict key checks, inventories."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from models.ddit import formats as loading
from models.ddit.backbone import DDiT, DDiTConfig
from models.ddit.heads import MDLMDenoiser, SEDDDenoiser
from models.ddit.saving import save_denoiser
from models.families import detect, load_denoiser
from models.hub import CheckpointError

V = 12
TINY = dict(hidden_size=32, cond_dim=16, n_blocks=2, n_heads=4, max_length=16)


def random_backbone(gen) -> DDiT:
    model = DDiT(DDiTConfig(vocab_size=V + 1, **TINY))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


def sedd_config(tokens, hidden, blocks, heads, length=1024):
    """The layout of SEDD's config.json on the hub: its whole hydra run config."""
    return {
        "ngpus": 8,
        "tokens": tokens,
        "training": {"batch_size": 512, "ema": 0.9999, "weight": "standard"},
        "data": {"train": "openwebtext", "valid": "wikitext103", "cache_dir": "data"},
        "graph": {"type": "absorb", "file": "data", "report_all": False},
        "noise": {"type": "loglinear", "sigma_min": 1e-4, "sigma_max": 20},
        "sampling": {"predictor": "euler", "steps": 128, "noise_removal": True},
        "model": {
            "name": "small",
            "type": "ddit",
            "hidden_size": hidden,
            "cond_dim": 128,
            "length": length,
            "n_blocks": blocks,
            "n_heads": heads,
            "scale_by_sigma": True,
            "dropout": 0.1,
        },
    }


def mdlm_config(vocab, hidden, blocks, heads, length=1024, tc=False):
    """The layout of kuleshov-group/mdlm-owt's transformers config.json."""
    return {
        "architectures": ["MDLM"],
        "model_type": "mdlm",
        "auto_map": {
            "AutoConfig": "configuration_mdlm.MDLMConfig",
            "AutoModelForMaskedLM": "modeling_mdlm.MDLM",
        },
        "vocab_size": vocab,
        "model_length": length,
        "hidden_dim": hidden,
        "cond_dim": 128,
        "n_blocks": blocks,
        "n_heads": heads,
        "dropout": 0.1,
        "time_conditioning": tc,
        "return_dict": False,
        "torch_dtype": "float32",
    }


def write_sedd(folder, model: DDiT):
    cfg = sedd_config(V, 32, 2, 4, length=16)
    cfg["model"]["cond_dim"] = 16
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


def write_mdlm(folder, model: DDiT, drop=()):
    cfg = mdlm_config(V + 1, 32, 2, 4, length=16)
    cfg["cond_dim"] = 16
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    state = {f"backbone.{k}": v for k, v in model.state_dict().items() if k not in drop}
    save_file(state, str(folder / "model.safetensors"))
    return folder


def word_tokenizer():
    vocab = {w: i for i, w in enumerate(["[UNK]", "<eos>", "the", "cat", "sat", "on", "mat"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", eos_token="<eos>", bos_token="<eos>"
    )


def sample_inputs(gen):
    return torch.randint(0, V + 1, (2, 9), generator=gen), torch.tensor([0.3, 0.9])


def test_sedd_format_loads_identically(gen, tmp_path):
    model = random_backbone(gen)
    folder = write_sedd(tmp_path / "sedd", model)
    assert detect(folder).name == "sedd"
    den = load_denoiser(folder, tokenizer=None)
    assert isinstance(den, SEDDDenoiser) and den.mask_id == V and den.max_length == 16
    x, t = sample_inputs(gen)
    with torch.no_grad():
        torch.testing.assert_close(
            den.log_probs(x, t), SEDDDenoiser(model).log_probs(x, t), atol=0, rtol=0
        )


def test_mdlm_format_loads_identically_without_inv_freq(gen, tmp_path):
    model = random_backbone(gen)
    folder = write_mdlm(tmp_path / "mdlm", model, drop=("rotary_emb.inv_freq",))
    assert detect(folder).name == "mdlm"
    den = load_denoiser(folder, tokenizer=None)
    assert isinstance(den, MDLMDenoiser) and den.time_conditioned is False
    x, t = sample_inputs(gen)
    with torch.no_grad():
        torch.testing.assert_close(
            den.log_probs(x, t), MDLMDenoiser(model).log_probs(x, t), atol=0, rtol=0
        )
    assert load_denoiser(folder, tokenizer=None, time_conditioning=True).time_conditioned
    assert (
        load_denoiser(folder, tokenizer=None, dtype="bfloat16").backbone.vocab_embed.embedding.dtype
        == torch.bfloat16
    )


def test_duet_round_trip_with_tokenizer(gen, tmp_path):
    tok = word_tokenizer()
    den = MDLMDenoiser(random_backbone(gen), time_conditioning=True, eps=1e-4, tokenizer=tok)
    folder = save_denoiser(den, tmp_path / "duet")
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["format"] == "duet-ddit" and cfg["parameterization"] == "mdlm"
    assert (cfg["mask_id"], cfg["eos_id"], cfg["ddit"]["hidden_size"]) == (V, 1, 32)
    back = load_denoiser(folder)
    assert isinstance(back, MDLMDenoiser)
    assert back.time_conditioned and back.eps == 1e-4
    assert back.tokenizer("the cat")["input_ids"] == [2, 3]
    x, t = sample_inputs(gen)
    with torch.no_grad():
        torch.testing.assert_close(back.log_probs(x, t), den.log_probs(x, t), atol=0, rtol=0)


def test_duet_float16_weights_load_as_float32(gen, tmp_path):
    den = SEDDDenoiser(random_backbone(gen))
    folder = save_denoiser(den, tmp_path / "half", dtype=torch.float16)
    stored = load_file(str(folder / "model.safetensors"))
    assert stored["blocks.0.attn_qkv.weight"].dtype == torch.float16
    back = load_denoiser(folder)
    assert isinstance(back, SEDDDenoiser) and back.tokenizer is None
    assert all(p.dtype == torch.float32 for p in back.parameters())
    x, t = sample_inputs(gen)
    with torch.no_grad():
        torch.testing.assert_close(back.log_probs(x, t), den.log_probs(x, t), atol=0.05, rtol=0)


@pytest.mark.parametrize(
    "edit, needle",
    [
        ("missing", "blocks.1.attn_out.weight"),
        ("unexpected", "blocks.7.extra.weight"),
        ("shape", "output_layer.linear.bias"),
        ("no_prefix", "vocab_embed.embedding"),
    ],
)
def test_strict_errors_name_the_key(gen, tmp_path, edit, needle):
    model = random_backbone(gen)
    folder = write_mdlm(tmp_path / "bad", model)
    state = load_file(str(folder / "model.safetensors"))
    if edit == "missing":
        del state["backbone.blocks.1.attn_out.weight"]
    elif edit == "unexpected":
        state["backbone.blocks.7.extra.weight"] = torch.zeros(2)
    elif edit == "shape":
        state["backbone.output_layer.linear.bias"] = torch.zeros(V + 2)
    else:  # a key that lost the prefix is unexpected, and its prefixed twin missing
        state["vocab_embed.embedding"] = state.pop("backbone.vocab_embed.embedding")
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=needle.replace(".", r"\.")) as info:
        load_denoiser(folder, tokenizer=None)
    if edit == "shape":
        assert "(14,)" in str(info.value) and "(13,)" in str(info.value)


def test_format_detection_and_hub_errors(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "weights.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="weights.pt"):
        detect(folder)
    with pytest.raises(FileNotFoundError):
        load_denoiser(tmp_path / "does-not-exist")
    with pytest.raises(OSError, match="HF_HUB_OFFLINE"):
        load_denoiser("no-such-owner-xyz/no-such-model")


def test_public_tokenizer_missing_warns(gen, tmp_path, monkeypatch):
    folder = write_sedd(tmp_path / "sedd", random_backbone(gen))
    monkeypatch.setattr(loading, "_PUBLIC_TOKENIZER", str(tmp_path / "no-tokenizer-here"))
    with pytest.warns(UserWarning, match="tokenizer=None"):
        den = load_denoiser(folder)
    assert den.tokenizer is None
    with pytest.raises(ValueError, match="always conditioned"):
        load_denoiser(folder, tokenizer=None, time_conditioning=False)


def public_inventory(rows, hidden, blocks, cond=128):
    """The tensors of the public DDiT checkpoints, written out from their published layout."""
    h = hidden
    inv = {
        "vocab_embed.embedding": (rows, h),
        "sigma_map.mlp.0.weight": (cond, 256),
        "sigma_map.mlp.0.bias": (cond,),
        "sigma_map.mlp.2.weight": (cond, cond),
        "sigma_map.mlp.2.bias": (cond,),
        "rotary_emb.inv_freq": (32,),
        "output_layer.norm_final.weight": (h,),
        "output_layer.linear.weight": (rows, h),
        "output_layer.linear.bias": (rows,),
        "output_layer.adaLN_modulation.weight": (2 * h, cond),
        "output_layer.adaLN_modulation.bias": (2 * h,),
    }
    for n in range(blocks):
        inv.update(
            {
                f"blocks.{n}.{k}": s
                for k, s in {
                    "norm1.weight": (h,),
                    "attn_qkv.weight": (3 * h, h),
                    "attn_out.weight": (h, h),
                    "norm2.weight": (h,),
                    "mlp.0.weight": (4 * h, h),
                    "mlp.0.bias": (4 * h,),
                    "mlp.2.weight": (h, 4 * h),
                    "mlp.2.bias": (h,),
                    "adaLN_modulation.weight": (6 * h, cond),
                    "adaLN_modulation.bias": (6 * h,),
                }.items()
            }
        )
    return inv


@pytest.mark.parametrize(
    "name, cfg, kind, hidden, blocks",
    [
        ("sedd-small", sedd_config(50257, 768, 12, 12), "sedd", 768, 12),
        ("sedd-medium", sedd_config(50257, 1024, 24, 16), "sedd", 1024, 24),
        ("mdlm-owt", mdlm_config(50258, 768, 12, 12), "mdlm", 768, 12),
    ],
)
def test_public_inventory_on_meta(tmp_path, name, cfg, kind, hidden, blocks):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / ("pytorch_model.bin" if kind == "sedd" else "model.safetensors")).write_bytes(b"")
    assert detect(folder).name == kind
    ddit, _ = loading.read_ddit_config(kind, cfg)
    assert (ddit.vocab_size, ddit.max_length) == (50258, 1024)
    shapes = loading.expected_shapes(ddit)
    assert shapes == public_inventory(50258, hidden, blocks)
    if name != "sedd-medium":  # the published small DDiT: 169.6M parameters with embeddings
        n_params = sum(torch.Size(s).numel() for k, s in shapes.items() if "inv_freq" not in k)
        assert n_params == 169_627_218
