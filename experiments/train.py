"""Train one tiny model on the Shakespeare works (the embedded default models).

    python -m experiments.train model=ar_tiny
    python -m experiments.train model=judge_tiny threads=2 max_minutes=12
    python -m experiments.train model=denoiser_tiny steps=20 out_dir=/tmp/d   # smoke run

Configs: ``conf/train.yaml`` and ``conf/model/*.yaml`` (each names its recipe in
:mod:`training.recipes`); the code lives in the :mod:`training` package, which knows nothing of
the entry points.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import experiments.config  # noqa: F401  (the duet.* resolvers of conf/train.yaml)
from experiments.paths import CONF_DIR
from training.loop import train

__all__ = ["cli", "main"]


# An absolute path (a relative one would be read as a Python package): conf/ in a checkout,
# experiments/conf in an installed wheel.
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    train(cfg)


def cli() -> None:
    """``duet-train``: the command-line checks, then Hydra."""
    from experiments.cli import run_cli

    run_cli(main, "train")


if __name__ == "__main__":
    cli()
