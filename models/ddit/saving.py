"""Saving DDiT denoisers in Duet's own format (``duet-ddit``; read by ``models.ddit.formats``)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..hub import parse_dtype
from .backbone import DDiT
from .formats import _OPTIONAL_KEYS, FORMAT_TAG, FORMAT_VERSION
from .heads import MDLMDenoiser, SEDDDenoiser

__all__ = ["save_denoiser"]


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def save_denoiser(denoiser: MDLMDenoiser | SEDDDenoiser, folder: str | os.PathLike,
                  dtype: Any = None) -> Path:
    """Write ``denoiser`` in the duet-ddit format; returns the folder.

    The weights go to ``model.safetensors`` in ``dtype`` (float32 default; float16/bfloat16
    halve the size and load back as float32). ``config.json`` is written last, so a folder with
    a config always has complete weights.
    """
    kind = getattr(denoiser, "parameterization", "")
    if kind not in ("mdlm", "sedd"):
        raise TypeError(f"save_denoiser expects an MDLMDenoiser or SEDDDenoiser, got {denoiser!r}")
    dtype = parse_dtype(dtype) or torch.float32
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    backbone: DDiT = denoiser.backbone
    state = {}
    for k, v in backbone.state_dict().items():
        keep_fp32 = k in _OPTIONAL_KEYS
        state[k] = v.detach().to("cpu", torch.float32 if keep_fp32 else dtype).contiguous()
    tok = denoiser.tokenizer
    if tok is not None:
        tok.save_pretrained(str(folder))
    _atomic_write(
        folder / "model.safetensors", lambda p: save_file(state, str(p), metadata={"format": "pt"})
    )
    cfg = dict(
        format=FORMAT_TAG, format_version=FORMAT_VERSION, parameterization=kind,
        ddit=asdict(backbone.config), time_conditioning=bool(denoiser.time_conditioned),
        eps=denoiser.eps, scale_by_sigma=bool(getattr(denoiser, "scale_by_sigma", True)),
        vocab_size=denoiser.vocab_size, mask_id=denoiser.mask_id,
        bos_id=getattr(tok, "bos_token_id", None), eos_id=getattr(tok, "eos_token_id", None),
        pad_id=getattr(tok, "pad_token_id", None), weights_dtype=str(dtype).split(".")[-1],
    )
    _atomic_write(folder / "config.json", lambda p: p.write_text(json.dumps(cfg, indent=2) + "\n"))
    return folder
