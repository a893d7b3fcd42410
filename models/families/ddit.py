"""The DDiT checkpoints of 2024: SEDD, MDLM and Duet's own format (``models.ddit``)."""

from __future__ import annotations

from functools import partial

from ..ddit.formats import ddit_kind, load_ddit
from ..registry import Family, register


def _load(kind: str, folder, cfg, **options):
    return load_ddit(folder, cfg, kind, **options)


for _kind, _types, _ids in (
        ("duet", (), ()), ("sedd", (), ("louaaron/sedd-small", "louaaron/sedd-medium")),
        ("mdlm", ("mdlm",), ("kuleshov-group/mdlm-owt",))):
    register(Family(
        name=_kind,
        claims=lambda cfg, files, k=_kind: ddit_kind(cfg, files) == k,
        load=partial(_load, _kind),
        model_types=_types,
        hub_ids=_ids,
    ))
