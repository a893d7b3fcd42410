"""Hydra callbacks: refuse a bad config before Hydra creates the run directory; mark the
multirun process for its workers; at the end, summarize the sweep directory."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from experiments.config import ConfigError
from experiments.lock import mark_sweep_parent
from experiments.plot import summarize_sweep

log = logging.getLogger(__name__)


def _check_run(config: DictConfig) -> None:
    """``experiments.run``: every check ``Session`` makes before it builds a model."""
    from experiments.session import Session

    if config.get("task", "generate") != "generate":
        return  # a task of its own checks its config itself
    Session(config, dict(config.hydra.runtime.choices))


def _check_evaluate(config: DictConfig) -> None:
    """``experiments.evaluate``: the run directory (Hydra's own ``hydra.run.dir``) exists."""
    path = Path(str(config.run_dir))
    if not path.is_dir():
        raise ConfigError(f"no samples.jsonl in {path} or below it: no such directory")


CHECKS = {"run": _check_run, "evaluate": _check_evaluate}


def _bare(job_dir: Path, config: DictConfig) -> bool:
    """Whether ``job_dir`` holds nothing but what Hydra wrote before the job (its saved
    configs and an empty log): the run's own files (``experiments.store``) are absent."""
    subdir, logfile = config.hydra.output_subdir, f"{config.hydra.job.name}.log"
    for path in job_dir.iterdir():
        if path.name == logfile and path.is_file() and path.stat().st_size == 0:
            continue
        if subdir is not None and path.name == str(subdir) and path.is_dir() and all(
                p.name in HYDRA_FILES for p in path.iterdir()):
            continue
        return False
    return True


HYDRA_FILES = {"config.yaml", "hydra.yaml", "overrides.yaml"}


class CheckFirst(Callback):
    """A refused run leaves nothing behind. ``on_run_start`` runs the command's config checks
    before Hydra creates the run directory and its ``run.log``; a sweep's jobs are checked
    inside each job, and ``on_job_end`` removes the directory of a job refused by a
    ``ConfigError`` while it holds only what Hydra wrote (the run's own files keep it).

    Args:
        command: ``run`` or ``evaluate``.
    """

    def __init__(self, command: str):
        if command not in CHECKS:
            raise ValueError(f"CheckFirst: unknown command {command!r}; one of {sorted(CHECKS)}")
        self.check = CHECKS[command]

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from experiments.cli import Refused

        try:
            self.check(config)
        except ConfigError as err:  # Hydra would only warn about an Exception from here
            raise Refused(err) from err

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        error = getattr(job_return, "_return_value", None)
        job_dir = Path(str(config.hydra.runtime.output_dir))
        if isinstance(error, ConfigError) and job_dir.is_dir() and _bare(job_dir, config):
            shutil.rmtree(job_dir)


class SweepResults(Callback):
    """Writes ``results.csv`` and ``frontier.png`` in ``hydra.sweep.dir``; before the jobs
    start, records this process's pid so that job workers stop when it is gone."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        mark_sweep_parent()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = config.hydra.sweep.dir
        rows = summarize_sweep(sweep_dir)
        log.info("%d result rows -> %s/results.csv, frontier.png", len(rows), sweep_dir)
