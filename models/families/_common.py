"""Loading helpers of the DiffuGPT, DiffuLLaMA, BD3-LM and masked-LM families (not a family
itself: it registers nothing; their adapters build on ``token_space_denoiser.SpaceDenoiser``).

``params_on_meta`` builds a module whose parameters live on the meta device while its buffers
are computed for real (rotary frequencies, position ids: values a checkpoint does not carry),
so ``models.hub.load_into`` fills it without a float32 copy; ``stored_shapes`` reads tensor
names and shapes from the files' headers only; ``space_for`` and ``tokenizer_mask_id`` give a
checkpoint's ``TokenSpace``; ``additive_mask`` is the explicit 4D attention mask transformers'
causal LMs take to attend bidirectionally.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..hub import INDEX_FILE, CheckpointError, weight_files
from ..vocab import TokenSpace

__all__ = ["additive_mask", "on_device", "params_on_meta", "position_limit", "space_for",
           "stored_shapes", "tokenizer_mask_id"]


@contextmanager
def params_on_meta():
    """Parameters registered inside this block are created on the meta device; buffers are not.

    A 7B model then costs no memory and no random initialisation before its weights are
    assigned, and the buffers a checkpoint does not hold keep the values their module computed.
    """
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = nn.Parameter(param.to("meta"),
                                                    requires_grad=param.requires_grad)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def on_device(module: nn.Module, device: Any) -> nn.Module:
    """``module`` moved to ``device`` (if one is given), in eval mode without gradients."""
    if device is not None:
        module = module.to(device)
    return module.eval().requires_grad_(False)


def stored_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor name of the checkpoint and its shape, from the safetensors headers (a
    ``.bin`` is memory-mapped); no tensor data is read. A shard the index names but the folder
    lacks is a ``CheckpointError`` (``models.hub.weight_files``)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in weight_files(folder):
        if file.suffix == ".safetensors":
            with open(file, "rb") as fh:
                size = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(size))
            shapes.update({k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"})
        else:
            state = torch.load(file, map_location="meta", weights_only=True)
            shapes.update({k: tuple(v.shape) for k, v in state.items()})
    index = folder / INDEX_FILE
    if index.exists():
        named = set(json.loads(index.read_text())["weight_map"])
        absent = sorted(named - set(shapes))
        if absent:
            raise CheckpointError(f"{folder}: {INDEX_FILE} names tensors no shard holds: "
                                  f"{', '.join(absent[:12])}")
    return shapes


def tokenizer_mask_id(tokenizer: Any, override: int | None, what: str) -> int:
    """The mask id: ``override`` if given, else the tokenizer's ``mask_token_id``."""
    if override is not None:
        return int(override)
    mask = getattr(tokenizer, "mask_token_id", None) if tokenizer is not None else None
    if mask is None:
        raise ValueError(f"{what}: the mask id comes from the tokenizer's mask token, and "
                         f"{'there is no tokenizer' if tokenizer is None else 'it has none'}; "
                         "pass mask_id= (the id the checkpoint was trained with)")
    return int(mask)


def position_limit(max_length: int | None, positions: int, what: str) -> int:
    """``max_length`` if given (at most the model's ``positions``), else ``positions``."""
    if max_length is None:
        return int(positions)
    if not 1 <= int(max_length) <= int(positions):
        raise ValueError(f"{what}: max_length must lie in [1, {positions}] (the model's "
                         f"positions), got {max_length}")
    return int(max_length)


def space_for(tokenizer: Any, mask: int, rows: int, exclude: tuple[int, ...] = (),
              what: str = "checkpoint") -> TokenSpace:
    """The real ids: every id the tokenizer defines (every row without one) but the mask and
    ``exclude``; rows past the tokenizer are padding."""
    if not 0 <= mask < rows:
        raise CheckpointError(f"{what}: mask id {mask} is not one of the model's {rows} "
                              "embedding rows")
    if tokenizer is None:
        keep = torch.ones(rows, dtype=torch.bool)
        keep[[mask, *[i for i in exclude if 0 <= i < rows]]] = False
        return TokenSpace(torch.arange(rows)[keep], mask, rows)
    if len(tokenizer) > rows:
        raise CheckpointError(f"{what}: the tokenizer defines {len(tokenizer)} ids but the model "
                              f"has only {rows} embedding rows")
    return TokenSpace.from_tokenizer(tokenizer, mask, rows, exclude)


def additive_mask(length: int, causal: bool, dtype: torch.dtype,
                  device: torch.device) -> Tensor:
    """(1, 1, L, L) additive attention mask: 0 where query i may attend key j, the dtype's
    minimum elsewhere. Full attention when ``causal`` is False, lower-triangular otherwise.
    transformers passes a 4D mask through unchanged to its sdpa and eager kernels (it only
    builds its own causal mask when none is given)."""
    mask = torch.zeros(length, length, dtype=dtype, device=device)
    if causal:
        mask.masked_fill_(torch.ones_like(mask, dtype=torch.bool).triu(1),
                          torch.finfo(dtype).min)
    return mask[None, None]
