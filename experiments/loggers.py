"""Where metrics go besides the run directory's JSONL files (always written).

``JsonlOnly`` adds nothing. ``WandbLogger`` mirrors a run to Weights & Biases: offline unless
the user sets the mode (``logger.mode=online`` or ``WANDB_MODE``), metrics plotted against
``num_steps``, the config, a samples table, the data reference row in the summary, and one
W&B group per sweep name so the runs of a multirun sit together. A resumed run reuses its
W&B id (kept in the run directory); a run that finished before ``logger=wandb`` was set gets
its W&B run from the stored metrics when the same command is rerun with it.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from pathlib import Path


class JsonlOnly:
    """No extra sink: ``metrics.jsonl`` and ``samples.jsonl`` are the record."""

    def needs_replay(self, run_dir: Path) -> bool:
        """Whether a finished run has never been sent to this sink."""
        return False

    def start(self, run_dir: Path, config: dict, name: str) -> None:
        pass

    def log_reference(self, metrics: dict) -> None:
        pass

    def log_step(self, metrics: dict) -> None:
        pass

    def log_baseline(self, name: str, metrics: dict) -> None:
        pass

    def log_samples(self, rows: list[dict]) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbLogger(JsonlOnly):
    """Weights & Biases logging.

    Args:
        project, entity: W&B destination.
        mode: "offline" (default), "online" or "disabled".
        group: runs sharing it are grouped (default: the run's ``name``, one per sweep).
        tags: extra run tags.
        table_rows: samples per step count shown in the samples table.
    """

    def __init__(self, project: str = "duet", entity: str | None = None, mode: str = "offline",
                 group: str | None = None, tags=(), table_rows: int = 16):
        mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)  # W&B's older names
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"wandb mode must be offline, online or disabled, got {mode!r}")
        if importlib.util.find_spec("wandb") is None:  # an extra: say how to get it, up front
            raise ImportError('logger=wandb needs the wandb package: pip install "duet-dlm[wandb]"')
        self.project, self.entity, self.mode = project, entity, mode
        self.group, self.tags, self.table_rows = group, list(tags), int(table_rows)
        self.run = None
        self._defined: set[str] = set()

    def needs_replay(self, run_dir: Path) -> bool:
        return not (Path(run_dir) / "wandb_id.txt").exists()

    def start(self, run_dir: Path, config: dict, name: str) -> None:
        import wandb

        id_file = Path(run_dir) / "wandb_id.txt"
        if not id_file.exists():
            id_file.write_text(uuid.uuid4().hex[:12])
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(project=self.project, entity=self.entity, mode=self.mode,
                              group=self.group, tags=self.tags, name=name, config=config,
                              dir=str(run_dir), id=id_file.read_text().strip(),
                              resume="allow")
        self.run.define_metric("num_steps")

    def log_reference(self, metrics: dict) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                self.run.summary[f"data/{key}"] = value

    def log_baseline(self, name: str, metrics: dict) -> None:
        """A single-model row (``experiments.baselines``): summary keys ``<name>_alone/...``."""
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.run.summary[f"{name}_alone/{key}"] = value

    def log_step(self, metrics: dict) -> None:
        numbers = {k: v for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for key in numbers:
            if key != "num_steps" and key not in self._defined:
                self.run.define_metric(key, step_metric="num_steps")
                self._defined.add(key)
        self.run.log(numbers)

    def log_samples(self, rows: list[dict]) -> None:
        import wandb

        table = wandb.Table(columns=["num_steps", "index", "text"])
        shown: dict[int, int] = {}
        for r in rows:
            if shown.get(r["num_steps"], 0) < self.table_rows:
                table.add_data(r["num_steps"], r["index"], r.get("text") or str(r["tokens"]))
                shown[r["num_steps"]] = shown.get(r["num_steps"], 0) + 1
        self.run.log({"samples": table})

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
