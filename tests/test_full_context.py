"""Every path that feeds an AR model works at exactly the model's context (BOS + L - 1 fed for
L tokens), and the OWT preset runs at length 1024 with GPT-2 shapes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import GPT2Config, GPT2LMHeadModel

import experiments.run as runner
from copula import CopulaGuide, CopulaISGuide
from decoding import Coordinator
from decoding.strategies import Ancestral, LeftToRight
from edlm import EnergyGuide
from models.ar.adapter import HFCausalLM
from models.ddit.backbone import DDiT, DDiTConfig
from models.ddit.heads import MDLMDenoiser

CONF = Path(__file__).resolve().parent.parent / "conf"
V, CTX = 10, 12


def gpt2(vocab, positions, seed=0):
    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=vocab, n_positions=positions,
                     bos_token_id=vocab - 1, eos_token_id=vocab - 1)
    return GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def ar():
    return HFCausalLM(gpt2(V, CTX))


def test_scoring_and_incremental_decoding_at_the_full_context(ar, gen):
    x = torch.randint(0, V, (2, CTX), generator=gen)
    full = ar.log_probs(x)  # BOS + 11 tokens fed: exactly the context
    assert full.shape == (2, CTX, V)
    first, cache = ar.start(2)
    inc = ar.extend(cache, x[:, : CTX - 1])
    torch.testing.assert_close(inc, full[:, 1:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="13 positions fed"):
        ar.extend(cache, x[:, :1])  # one more than BOS + 11
    with pytest.raises(ValueError, match="maximum 12"):
        ar.log_probs(torch.zeros(1, CTX + 1, dtype=torch.long))
    nxt = ar.next_log_probs(x)  # no BOS: 12 fed
    torch.testing.assert_close(nxt[:, :-1].exp().sum(-1), torch.ones(2, CTX - 1))


@pytest.mark.parametrize("make, strategy", [
    (lambda ar: EnergyGuide(ar, num_candidates=2), Ancestral),
    (lambda ar: EnergyGuide(ar, num_candidates=2, carry_over=True), Ancestral),
    (CopulaGuide, Ancestral), (CopulaGuide, LeftToRight),
    (lambda ar: CopulaISGuide(ar, num_candidates=2), Ancestral)])
def test_guides_run_at_the_ar_models_context(ar, make, strategy):
    den = MDLMDenoiser(DDiT(DDiTConfig(vocab_size=V + 1, hidden_size=16, cond_dim=8,
                                       n_blocks=1, n_heads=2, max_length=CTX)))
    coord = Coordinator(den, strategy(), make(ar))
    res = coord.generate(2, CTX, 3, generator=torch.Generator().manual_seed(0))
    assert res.tokens.shape == (2, CTX) and res.nfe["ar_forwards"] > 0


def write_public_checkpoints(root: Path) -> tuple[Path, Path]:
    """Random weights in SEDD's hub format and transformers GPT-2's, GPT-2 shapes (50257
    tokens, 1024 positions), tiny widths."""
    sedd = root / "sedd"
    sedd.mkdir()
    torch.manual_seed(0)
    ddit = DDiT(DDiTConfig(vocab_size=50258, hidden_size=32, cond_dim=16, n_blocks=1,
                           n_heads=2, max_length=1024))
    config = {"tokens": 50257, "graph": {"type": "absorb"},
              "noise": {"type": "loglinear", "sigma_min": 1e-4, "sigma_max": 20},
              "model": {"name": "small", "type": "ddit", "hidden_size": 32, "cond_dim": 16,
                        "length": 1024, "n_blocks": 1, "n_heads": 2, "scale_by_sigma": True,
                        "dropout": 0.1}}
    (sedd / "config.json").write_text(json.dumps(config))
    torch.save(ddit.state_dict(), sedd / "pytorch_model.bin")
    gpt = root / "gpt2"
    gpt2(50257, 1024).save_pretrained(gpt)
    return sedd, gpt


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")  # no tokenizer offline: ids only
def test_owt_preset_runs_at_length_1024(tmp_path):
    sedd, gpt = write_public_checkpoints(tmp_path)
    base = ["experiment=owt_sedd_medium", f"denoiser.name_or_path={sedd}",
            f"ar.name_or_path={gpt}", f"judge.name_or_path={gpt}", "length=1024",
            "steps=[2]", "num_samples=2", "batch_size=2", "device=cpu", "threads=1"]
    runs = [("edlm", ["guide=edlm", "guide.num_candidates=2"]),
            ("edlm_carry", ["guide=edlm", "guide.num_candidates=2", "guide.carry_over=true"]),
            ("dcd", ["guide=dcd", "gen_ppl_convention=bos"]),  # BOS + 1024: two windows
            ("dcd_chunked", ["guide=dcd", "strategy=chunked"]),
            ("dcd_l2r", ["guide=dcd", "strategy=left_to_right"])]
    for name, extra in runs:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("run", overrides=base + extra)
        (line,) = runner.run(cfg, tmp_path / name, {"guide": name})
        assert line["length"] == 1024 and math.isfinite(line["gen_ppl"]), name
        assert line["nfe_ar"] > 0
        want = "bos" if name == "dcd" else "mdlm"
        assert line["convention"] == want
        assert line["judged_tokens"] == 2 * (1024 if want == "bos" else 1023)
