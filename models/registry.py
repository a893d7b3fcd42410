"""The registry of checkpoint families: from a ``config.json`` to the loader that reads it.

Each family module in ``models/families`` registers a ``Family``: a name, a test on the folder's
``config.json`` (and file names), and a loader. ``models.families.load_denoiser`` resolves the
folder (local or hub cache), asks each registered family in turn, and calls the first that
claims it; an unknown checkpoint is refused before any weights are read, with the known
families listed. The engine never sees any of this: a loader returns an object satisfying
``decoding.protocols.Denoiser``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Family", "families", "register"]


@dataclass(frozen=True)
class Family:
    """A checkpoint family.

    Attributes:
        name: short name (``dream``, ``mdlm``, ...).
        claims: ``(config, file_names) -> bool``: is this folder one of ours?
        load: ``(folder, config, **options) -> Denoiser``.
        model_types: the hub ``model_type`` values it reads (for messages and docs).
        hub_ids: public checkpoints of the family (a hub id listed here picks the family).
        tokenizer: optional ``(folder) -> tokenizer`` reading the family's tokenizer files
            without its weights (default: transformers' AutoTokenizer, no remote code).
    """

    name: str
    claims: Callable[[dict, set[str]], bool]
    load: Callable[..., Any]
    model_types: tuple[str, ...] = ()
    hub_ids: tuple[str, ...] = field(default=())
    tokenizer: Callable[[Any], Any] | None = None


_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    if family.name in _FAMILIES:
        raise ValueError(f"a family named {family.name!r} is registered already")
    _FAMILIES[family.name] = family
    return family


def families() -> list[Family]:
    """Every registered family, in the order they are asked (``models.families`` registers the
    built-in ones when imported)."""
    return list(_FAMILIES.values())
