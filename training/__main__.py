"""Train one tiny model on the Shakespeare works (the embedded default models).

    python -m training model=ar_tiny
    python -m training model=judge_tiny threads=2 max_minutes=12
    python -m training model=denoiser_tiny steps=20 out_dir=/tmp/d   # smoke run

``python -m experiments.train ...`` is the same entry point. Configs: ``conf/train.yaml`` and
``conf/model/*.yaml`` (each names its recipe in :mod:`training.recipes`).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import experiments.config  # noqa: F401  (the duet.* resolvers of conf/train.yaml)
from experiments.commands import CONF_DIR
from training.loop import train


# An absolute path (a relative one would be read as a Python package): conf/ in a checkout,
# experiments/conf in an installed wheel.
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
