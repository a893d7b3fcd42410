"""Same seed, same tokens: fingerprints of every strategy preset x guide on fixed models.

Each entry is the first 16 hex digits of the SHA-256 of the generated (N, L) int64 tokens,
recorded before a refactoring and kept through it, so a change of behaviour cannot slip in
unnoticed. A change made on purpose updates the entries it affects (and says so in the commit
message). A new preset needs its entries recorded here: the test fails until they are.

Families:
  * ``tiny``: the embedded Shakespeare models (MDLM denoiser, small AR model), length 16;
  * ``hmm``: the oracle of ``conf/oracle/random.yaml`` as denoiser and AR model, length 6;
  * ``sedd/<schedule>``: a small time-conditioned SEDD with seeded random weights under each
    schedule (ancestral, no guide): the schedule reaches the network's noise input here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from decoding import Coordinator
from decoding.schedules import Cosine, Linear, LogLinear
from experiments.config import build
from models import HMM, HMMAutoregressive, HMMDenoiser, load_ar, load_denoiser
from models.ddit import DDiT, DDiTConfig
from models.denoisers import SEDDDenoiser

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
GUIDES = ("none", "edlm", "dcd", "dcd_is")
SETTINGS = {"tiny": dict(n=3, length=16, steps=4), "hmm": dict(n=4, length=6, steps=3)}

FINGERPRINTS = {
    "hmm/ancestral/dcd": "79c7613b89d7a97f",
    "hmm/ancestral/dcd_is": "c5e0c5814cf340ef",
    "hmm/ancestral/edlm": "e9468397df389d03",
    "hmm/ancestral/none": "19085766df5b5325",
    "hmm/blocks/dcd": "79c7613b89d7a97f",
    "hmm/blocks/dcd_is": "c5e0c5814cf340ef",
    "hmm/blocks/edlm": "e9468397df389d03",
    "hmm/blocks/none": "19085766df5b5325",
    "hmm/confidence/dcd": "0bc22d41866a75af",
    "hmm/confidence/dcd_is": "0bc22d41866a75af",
    "hmm/confidence/edlm": "66924532110aa4de",
    "hmm/confidence/none": "680a890831a35233",
    "hmm/entropy/dcd": "89403da3df7be795",
    "hmm/entropy/dcd_is": "208db0200bbc3605",
    "hmm/entropy/edlm": "7b4135983b43a58d",
    "hmm/entropy/none": "87563a37e8d96922",
    "hmm/left_to_right/dcd": "58943987e0b3449c",
    "hmm/left_to_right/dcd_is": "208db0200bbc3605",
    "hmm/left_to_right/edlm": "7b4135983b43a58d",
    "hmm/left_to_right/none": "43f6037bf6755ba7",
    "hmm/margin/dcd": "89403da3df7be795",
    "hmm/margin/dcd_is": "208db0200bbc3605",
    "hmm/margin/edlm": "7b4135983b43a58d",
    "hmm/margin/none": "87563a37e8d96922",
    "hmm/remdm/dcd": "79c7613b89d7a97f",
    "hmm/remdm/dcd_is": "0c8ff9342dfea240",
    "hmm/remdm/edlm": "5ac9fa0359192b5b",
    "hmm/remdm/none": "19085766df5b5325",
    "sedd/cosine": "b1a339e0ec1654e3",
    "sedd/linear": "44721b7a6dcfcd54",
    "sedd/loglinear": "44721b7a6dcfcd54",
    "tiny/ancestral/dcd": "5803d7abc88b311f",
    "tiny/ancestral/dcd_is": "439bc3918df1f4a1",
    "tiny/ancestral/edlm": "a4dac97b306ffa54",
    "tiny/ancestral/none": "c9dd837410cad55b",
    "tiny/blocks/dcd": "5803d7abc88b311f",
    "tiny/blocks/dcd_is": "439bc3918df1f4a1",
    "tiny/blocks/edlm": "a4dac97b306ffa54",
    "tiny/blocks/none": "c9dd837410cad55b",
    "tiny/confidence/dcd": "3dac1f6c5a434102",
    "tiny/confidence/dcd_is": "f465d6eb73782489",
    "tiny/confidence/edlm": "690df02e2c2aaeb1",
    "tiny/confidence/none": "d85071e7c5340f8c",
    "tiny/entropy/dcd": "488143751680c686",
    "tiny/entropy/dcd_is": "60d041fe8d0a7153",
    "tiny/entropy/edlm": "8535dfdae57485ca",
    "tiny/entropy/none": "cb9fedacc97b5abf",
    "tiny/left_to_right/dcd": "e90af117ac0f7290",
    "tiny/left_to_right/dcd_is": "a90225882742585c",
    "tiny/left_to_right/edlm": "604c3f20675b568c",
    "tiny/left_to_right/none": "34e1f42fdfb7571b",
    "tiny/margin/dcd": "ef22210e67d6ff19",
    "tiny/margin/dcd_is": "8aae941d48ece82c",
    "tiny/margin/edlm": "86c00ca96af6a070",
    "tiny/margin/none": "0bc04ddc40c21e4a",
    "tiny/remdm/dcd": "6eaf6e8898b7e4a5",
    "tiny/remdm/dcd_is": "c13edbb601444c51",
    "tiny/remdm/edlm": "f25165e7d4c55f5e",
    "tiny/remdm/none": "2b96f93dd18a8fe6",
}


def fingerprint(tokens: torch.Tensor) -> str:
    return hashlib.sha256(tokens.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()[:16]


def strategies() -> list[str]:
    return sorted(p.stem for p in (CONF / "strategy").glob("*.yaml"))


@pytest.fixture(scope="module")
def families():
    hmm = HMM.random(vocab_size=3, num_states=3, length=6, seed=0, concentration=0.5)
    return {
        "tiny": (load_denoiser(ROOT / "models/tiny/denoiser"), load_ar(ROOT / "models/tiny/ar")),
        "hmm": (HMMDenoiser(hmm), HMMAutoregressive(hmm)),
    }


def random_sedd(seed: int = 0) -> SEDDDenoiser:
    """A time-conditioned SEDD whose every weight is random (the zero init would hide t)."""
    torch.manual_seed(seed)
    net = DDiT(DDiTConfig(vocab_size=7, hidden_size=32, cond_dim=16, n_blocks=1, n_heads=2,
                          max_length=8))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return SEDDDenoiser(net)


def run_preset(family: str, strategy: str, guide: str, models) -> torch.Tensor:
    denoiser, ar = models[family]
    tokenizer = getattr(denoiser, "tokenizer", None)
    eos = None if tokenizer is None else tokenizer.eos_token_id
    strat = build(OmegaConf.load(CONF / "strategy" / f"{strategy}.yaml"), "strategy",
                  eos_id=lambda: eos)
    gd = build(OmegaConf.load(CONF / "guide" / f"{guide}.yaml"), "guide", ar=lambda: ar)
    coord = Coordinator(denoiser, strat, gd, LogLinear())
    st = SETTINGS[family]
    return coord.generate(st["n"], st["length"], st["steps"],
                          generator=torch.Generator().manual_seed(0)).tokens


def check(key: str, tokens: torch.Tensor) -> None:
    got = fingerprint(tokens)
    assert key in FINGERPRINTS, f"no fingerprint recorded for {key}: add {key!r}: {got!r}"
    assert got == FINGERPRINTS[key], f"{key}: tokens changed ({got} != {FINGERPRINTS[key]})"


@pytest.mark.parametrize("guide", GUIDES)
@pytest.mark.parametrize("strategy", strategies())
@pytest.mark.parametrize("family", sorted(SETTINGS))
def test_preset_tokens_unchanged(family, strategy, guide, families):
    check(f"{family}/{strategy}/{guide}", run_preset(family, strategy, guide, families))


@pytest.mark.parametrize("schedule", ["loglinear", "linear", "cosine"])
def test_time_conditioned_sedd_tokens(schedule):
    sched = {"loglinear": LogLinear(), "linear": Linear(), "cosine": Cosine()}[schedule]
    strat = build(OmegaConf.load(CONF / "strategy" / "ancestral.yaml"), "strategy")
    coord = Coordinator(random_sedd(), strat, None, sched)
    tokens = coord.generate(4, 8, 4, generator=torch.Generator().manual_seed(0)).tokens
    check(f"sedd/{schedule}", tokens)
