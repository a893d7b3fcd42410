"""Print the model card's samples: three 128-token draws of the tiny denoiser at 128 steps.

    python models/tiny/make_card_samples.py            # from the repository root

Ancestral sampling with the default (independent, float64) guide, seed 0; text is decoded with
the tokenizer saved beside the denoiser. Also prints the held-out AR and judge perplexities of
these samples, for orientation only (three samples are far too few for a gen-PPL figure).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from decoding import Coordinator  # noqa: E402
from decoding.strategies import Ancestral  # noqa: E402
from models.ar.loading import load_ar  # noqa: E402
from models.families import load_denoiser  # noqa: E402

TINY = ROOT / "models" / "tiny"


def main() -> None:
    denoiser = load_denoiser(TINY / "denoiser")
    result = Coordinator(denoiser, Ancestral()).generate(
        3, 128, 128, generator=torch.Generator().manual_seed(0)
    )
    tokens = result.tokens
    for name in ("ar", "judge"):
        model = load_ar(TINY / name)
        logp = model.log_probs(tokens).gather(-1, tokens[..., None]).squeeze(-1)
        print(f"{name} perplexity of the 3 samples: {math.exp(-logp.mean().item()):.1f}")
    for i, row in enumerate(tokens.tolist()):
        print(f"\n--- sample {i} ---")
        print(denoiser.tokenizer.decode(row))


if __name__ == "__main__":
    main()
