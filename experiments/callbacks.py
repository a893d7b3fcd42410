"""Hydra callback: at the end of a multirun, summarize the sweep directory."""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from experiments.plot import summarize_sweep

log = logging.getLogger(__name__)


class SweepResults(Callback):
    """Writes ``results.csv`` and ``frontier.png`` in ``hydra.sweep.dir``."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = config.hydra.sweep.dir
        rows = summarize_sweep(sweep_dir)
        log.info("%d result rows -> %s/results.csv, frontier.png", len(rows), sweep_dir)
