"""The denoiser families, one module each; importing a module registers its family.

The order of the imports is the order in which ``detect`` asks them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..hub import load_tokenizer, read_config, resolve_folder
from ..registry import Family, families
from . import (
    bd3lm,  # noqa: F401
    ddit,  # noqa: F401
    diffugpt,  # noqa: F401
    diffullama,  # noqa: F401
    dream,  # noqa: F401
    llada,  # noqa: F401
    masked_lm,  # noqa: F401
)

__all__ = ["checkpoint_tokenizer", "detect", "family_named", "load_denoiser"]


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


def family_named(name: str) -> Family:
    """The registered family called ``name``; ValueError listing the names otherwise."""
    for family in families():
        if family.name == name:
            return family
    raise ValueError(f"no denoiser family named {name!r}; registered: "
                     f"{[f.name for f in families()]}")


def load_denoiser(name_or_path: str | os.PathLike, family: str | None = None,
                  **options: Any) -> Any:
    """Load any registered denoiser from a hub id or a local folder.

    Args:
        name_or_path: a hub id (``Dream-org/Dream-v0-Instruct-7B``, ``kuleshov-group/mdlm-owt``)
            or a folder.
        family: force a family by name (``"diffullama"``: a checkpoint whose config cannot
            tell it from a plain model of its architecture). Default: the family whose
            ``hub_ids`` list ``name_or_path``, else the one ``detect`` finds.
        options: the family's own (``device``, ``dtype``, ``tokenizer`` for all; see each
            family's loader for the rest). An option the family does not take is an error.

    Returns:
        A ``decoding.protocols.Denoiser`` in eval mode.
    """
    chosen = family_named(family) if family is not None else None
    if chosen is None:
        chosen = next((f for f in families() if str(name_or_path) in f.hub_ids), None)
    folder = resolve_folder(name_or_path)
    chosen = chosen or detect(folder)
    return chosen.load(folder, read_config(folder), **options)


def _local_folder(name_or_path: str | os.PathLike) -> Path | None:
    """A folder, or the hub cache's snapshot of an id whose config.json is cached; no download."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(str(name_or_path), "config.json")
    except Exception:  # not a hub id
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def checkpoint_tokenizer(name_or_path: str | os.PathLike) -> Any:
    """A checkpoint's tokenizer, read without its weights and without downloading, or None.

    For checks that must run before a large model loads (a pairing's tokenizers).
    """
    folder = _local_folder(name_or_path)
    if folder is None or not (folder / "config.json").exists():
        return None
    try:
        family = next((f for f in families() if str(name_or_path) in f.hub_ids), None)
        family = family or detect(folder)
        if family.tokenizer is not None:
            return family.tokenizer(folder)
    except Exception:  # an unknown layout is reported when the model itself loads
        pass
    return load_tokenizer(folder, warn=False)
