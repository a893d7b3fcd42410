"""Train one tiny model on the Shakespeare works (the embedded default models).

    python -m training model=ar_tiny
    python -m training model=judge_tiny threads=2 max_minutes=12
    python -m training model=denoiser_tiny steps=20 out_dir=/tmp/d   # smoke run

``python -m experiments.train ...`` is the same entry point. Configs: ``conf/train.yaml`` and
``conf/model/*.yaml`` (each names its recipe in :mod:`training.recipes`).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from training.loop import train


# An absolute path: a relative one would be read as a Python package when main() is imported.
@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parents[1] / "conf"),
            config_name="train")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
