"""Writing a trained model: weights, tokenizer and ``train_log.json``, swapped in atomically."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from torch import nn


def previous_log(init_from: str | None) -> dict | None:
    """The ``train_log.json`` of the folder a run continued from (kept with the new weights)."""
    path = Path(init_from or "") / "train_log.json"
    return json.loads(path.read_text()) if init_from and path.is_file() else None


def save_run(recipe, model: nn.Module, tokenizer, dtype: torch.dtype, summary: dict,
             out: str | Path) -> Path:
    """Write the recipe's checkpoint, the tokenizer and the summary into ``out``.

    Everything is written to a sibling ``.tmp`` folder first, then swapped into place.
    """
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "train_log.json").write_text(json.dumps(summary, indent=2) + "\n")
    recipe.save(model.cpu(), tmp, tokenizer, dtype)
    tokenizer.save_pretrained(str(tmp))  # each folder loads on its own
    replace_folder(tmp, out)
    return out


def replace_folder(tmp: Path, final: Path) -> None:
    """Swap a finished folder into place so a crash never leaves half a checkpoint."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
