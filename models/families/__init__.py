"""The denoiser families, one module each; importing a module registers its family.

The order of the imports is the order in which ``detect`` asks them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..hub import read_config, resolve_folder
from ..registry import Family, families
from . import ddit  # noqa: F401
from . import dream  # noqa: F401
from . import llada  # noqa: F401

__all__ = ["detect", "load_denoiser"]


def detect(folder: str | os.PathLike) -> Family:
    """The family that claims ``folder``; ValueError naming what the config says otherwise."""
    folder = Path(folder)
    cfg = read_config(folder)
    present = {p.name for p in folder.iterdir()}
    for family in families():
        if family.claims(cfg, present):
            return family
    known = sorted({t for f in families() for t in f.model_types})
    said = {k: cfg[k] for k in ("model_type", "architectures", "format") if k in cfg}
    raise ValueError(
        f"cannot tell which model family {folder} holds (config says {said or 'nothing'}; "
        f"files: {sorted(present)}). Known model_type values: {known}; and the SEDD, MDLM and "
        "duet-ddit layouts (docs/families.md)"
    )


def load_denoiser(name_or_path: str | os.PathLike, **options: Any) -> Any:
    """Load any registered denoiser from a hub id or a local folder.

    Args:
        name_or_path: a hub id (``Dream-org/Dream-v0-Instruct-7B``, ``kuleshov-group/mdlm-owt``)
            or a folder.
        options: the family's own (``device``, ``dtype``, ``tokenizer`` for all; see each
            family's loader for the rest). An option the family does not take is an error.

    Returns:
        A ``decoding.protocols.Denoiser`` in eval mode.
    """
    folder = resolve_folder(name_or_path)
    family = detect(folder)
    return family.load(folder, read_config(folder), **options)
