"""Hydra callback: mark the multirun process for its workers; at the end, summarize the sweep
directory."""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from experiments.lock import mark_sweep_parent
from experiments.plot import summarize_sweep

log = logging.getLogger(__name__)


class SweepResults(Callback):
    """Writes ``results.csv`` and ``frontier.png`` in ``hydra.sweep.dir``; before the jobs
    start, records this process's pid so that job workers stop when it is gone."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        mark_sweep_parent()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = config.hydra.sweep.dir
        rows = summarize_sweep(sweep_dir)
        log.info("%d result rows -> %s/results.csv, frontier.png", len(rows), sweep_dir)
