"""Loads a task's JSONL file for lm-eval (``custom_dataset: !function utils.load``).

The file named by ``dataset_kwargs.data_file`` is read from this folder unless the name is
an absolute path; write the files with ``make_data.py`` first.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load(data_file: str, **_metadata):
    """{"test": the documents} as a ``datasets.DatasetDict``."""
    import datasets

    path = Path(data_file) if Path(data_file).is_absolute() else HERE / data_file
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run python {HERE / 'make_data.py'} "
                                f"(add --out DIR to write it elsewhere)")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
