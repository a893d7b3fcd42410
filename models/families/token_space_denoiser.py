"""What the transformer DLM families (Dream, LLaDA) share: ids through a ``TokenSpace``, the
output head on chosen rows only, streamed strict loading, and their tokenizers without remote
code.

A family supplies a trunk (``features``: model ids -> final hidden states) and its output
projection (``head``); ``SpaceDenoiser`` turns them into ``decoding.protocols.Denoiser``:

* engine ids ``0..V-1`` (mask ``V``) are mapped to the model's ids on the way in, and only the
  real-token columns of the logits are computed into the output, so the mask and the padding
  rows get exactly zero mass (``models.vocab``);
* ``rows=`` projects only the rows a step reads (the trunk still sees the whole sequence);
* ``shift = True`` (Dream, DiffuGPT-style checkpoints): the hidden state at i-1 predicts token
  i; row 0 is predicted from position 0 itself, as the authors do;
* the models take no time input: ``t`` is checked and otherwise ignored (``time_conditioned``
  is False, so the engine may skip a forward when the tokens did not change).

``stream_into`` loads safetensors shards one at a time into a module built on the meta device:
every key and shape is compared (by name) from the shard headers before any tensor is read.
On the CPU the tensors come memory-mapped from the shards (no copy): loading a 1.15B-parameter
bf16 Dream peaks at 1.2x the weight files' size in resident memory, interpreter and libraries
included, once every weight page is touched (``benchmarks/family_memory.py``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from decoding.checks import device_check
from decoding.schedules import LogLinear

from ..hub import (
    CheckpointError,
    check_shapes,
    listing,
    load_into,
    parse_dtype,
    read_weights,
    weight_files,
)
from ..vocab import TokenSpace, engine_tokenizer
from .space_head import space_head_log_probs

__all__ = ["SpaceDenoiser", "family_tokenizer", "space_head_log_probs", "stream_into",
           "token_space"]


class SpaceDenoiser(nn.Module):
    """A transformer DLM seen as per-position marginals over its real tokens.

    Subclasses set ``shift`` and implement ``features(ids, causal)`` ((B, L) model ids ->
    (B, L, H) final hidden states; ``causal``: lower-triangular attention) and ``head()``
    (weight, bias) of the output projection over all the model's rows.

    Args:
        space: the model's real ids and mask (``models.vocab.TokenSpace``).
        tokenizer: the model's own tokenizer (kept wrapped in engine ids as ``tokenizer``).
        max_length: the longest sequence accepted.
    """

    supports_causal = True
    supports_rows = True
    supports_cache: tuple[str, ...] = ()  # families with ``cached_features``: prefix, dual
    time_conditioned = False
    shift = False

    def __init__(self, space: TokenSpace, tokenizer: Any, max_length: int | None):
        super().__init__()
        self.token_space = space
        self.vocab_size, self.mask_id = space.size, space.mask_id
        self.tokenizer = engine_tokenizer(tokenizer, space)
        self.max_length = None if max_length is None else int(max_length)
        # The engine maps its sampler's times onto this one; the models ignore t (their mask
        # ratio is what carries the noise level), so only the score mass reads it.
        self.schedule = LogLinear()
        self.register_buffer("_to_model", space._in.clone(), persistent=False)
        self.register_buffer("_real_ids", space.ids.clone(), persistent=False)

    def features(self, ids: Tensor, causal: bool) -> Tensor:
        raise NotImplementedError

    def head(self) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def cached_features(self, ids: Tensor, pos: Tensor, call: Any, causal: bool) -> Tensor:
        """(B, L) model ids -> (B, n, H) hidden states at positions ``pos`` (B, n), the other
        keys and values from the ``decoding.cache.CacheCall``'s store (families with
        ``supports_cache``; ``models.families.cached_trunks``)."""
        raise NotImplementedError

    def cache_block(self, causal: bool) -> int | None:
        """``decoding.cache``: causal calls are exact (1), bidirectional ones approximate."""
        return 1 if causal else None

    def _check(self, x: Tensor, t: Tensor | float, rows: Tensor | None) -> tuple[Tensor, Tensor]:
        if not isinstance(x, Tensor) or x.dim() != 2:
            raise ValueError(f"x must be a (B, L) tensor, got {getattr(x, 'shape', type(x))}")
        if x.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"x must hold integer token ids, got dtype {x.dtype}")
        b, length = x.shape
        if self.max_length is not None and length > self.max_length:
            raise ValueError(f"sequence length {length} exceeds the denoiser's max_length "
                             f"{self.max_length}")
        if rows is not None and (rows.dtype != torch.bool or rows.shape != x.shape):
            raise ValueError(f"rows must be a (B, L) = {tuple(x.shape)} bool mask, got "
                             f"{rows.dtype} {tuple(rows.shape)}")
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device)
        t = t.expand(b) if t.dim() == 0 else t
        if t.shape != (b,):
            raise ValueError(f"t must be a scalar or (B,) = ({b},), got shape {tuple(t.shape)}")
        if x.numel():  # checked on the device, no host read on accelerators
            ends = torch.stack([x.min().float(), x.max().float()])
            device_check((ends[0] >= 0) & (ends[1] <= self.mask_id), lambda: (
                f"token ids must lie in [0, {self.vocab_size}) or equal the mask id "
                f"{self.mask_id}; got values in [{int(ends[0])}, {int(ends[1])}]"))
        return x.long(), t

    def log_probs(self, x: Tensor, t: Tensor | float, causal: bool = False,
                  rows: Tensor | None = None, cache: Any = None) -> Tensor:
        """log p(x0_i = v | x_t) over the V real tokens, for every position or for ``rows``.

        Args:
            x: (B, L) engine ids (real tokens or ``mask_id``).
            t: (B,) or scalar diffusion time: checked, not used (no time input).
            causal: lower-triangular attention with the same weights. Unshifted, row i sees
                x_<=i (its own input is the mask wherever the row is used); shifted, row i
                comes from position i-1 and sees x_<i. Either way: prefix-only context.
            rows: optional (B, L) bool of the positions whose rows are wanted.
            cache: a ``decoding.cache.CacheCall`` (families with ``supports_cache``): only its
                positions run; ``rows`` must lie among them.

        Returns:
            float32 (B, L, V), or (n, V) packed for the True entries of ``rows``.
        """
        x, _ = self._check(x, t, rows)
        if cache is not None:
            from .cached_trunks import cached_log_probs

            return cached_log_probs(self, x, causal, rows, cache)
        feats = self.features(self._to_model[x], causal)
        if self.shift and feats.shape[1] > 1:  # row i from hidden i-1; row 0 from itself
            feats = torch.cat([feats[:, :1], feats[:, :-1]], dim=1)
        weight, bias = self.head()
        return space_head_log_probs(feats, weight, bias, self.token_space, rows, self._real_ids)

    def log_probs_with_mass(self, x: Tensor, t: Tensor | float,
                            rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The marginals and the ideal score mass log(α_t / (1-α_t)) (the models output the
        denoising distribution itself, as MDLM does); -inf outside ``rows``."""
        lp = self.log_probs(x, t, rows=rows)
        _, t = self._check(x, t, rows)
        mass = self.schedule.ideal_log_mass(t)[:, None].expand(x.shape)
        if rows is not None:
            mass = mass.masked_fill(~rows, -torch.inf)
        return lp, mass.contiguous()

    def forward(self, x: Tensor, t: Tensor | float, causal: bool = False) -> Tensor:
        return self.log_probs(x, t, causal=causal)

    def extra_repr(self) -> str:
        return (f"vocab_size={self.vocab_size}, mask_id={self.mask_id}, "
                f"max_length={self.max_length}, shift={self.shift}, space={self.token_space}")


class _Shape:
    """A tensor's shape read from a safetensors header (no data)."""

    def __init__(self, shape: list[int]):
        self.shape = tuple(shape)


def stream_into(module: nn.Module, folder: Path, source: str, prefix: str = "",
                dtype: Any = None, device: Any = None) -> nn.Module:
    """Fill a meta-device ``module`` from the checkpoint in ``folder``, strictly, shard by shard.

    Keys and shapes are checked from the headers first (``CheckpointError`` naming every
    missing, unexpected or mis-shaped tensor, or a shard the index names but the folder lacks);
    then each shard's tensors are read in their stored dtype (cast one at a time only when
    ``dtype`` differs) straight onto ``device``. ``.bin`` checkpoints go through
    ``models.hub.read_weights``. Non-persistent buffers are the caller's to rebuild.
    """
    files = weight_files(folder)
    dtype = parse_dtype(dtype)
    if any(f.suffix != ".safetensors" for f in files):
        module = load_into(module, read_weights(folder, prefix), source, dtype, device)
        return module.requires_grad_(False)
    from safetensors import safe_open

    heads: dict[str, _Shape] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                heads[key] = _Shape(handle.get_slice(key).get_shape())
    bare = [k for k in heads if not k.startswith(prefix)]
    if bare:
        raise CheckpointError(f"{source}: unexpected keys without the {prefix!r} prefix: "
                              f"{listing(bare)}")
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    check_shapes({k.removeprefix(prefix): v for k, v in heads.items()}, want, source,
                 type(module).__name__)
    where = torch.device("cpu" if device is None else device)
    if where.type == "cuda" and where.index is None:
        where = torch.device("cuda", torch.cuda.current_device())
    for file in files:
        part = {}
        with safe_open(str(file), framework="pt", device=str(where)) as handle:
            for key in handle.keys():
                tensor = handle.get_tensor(key)
                if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
                    tensor = tensor.to(dtype)
                part[key.removeprefix(prefix)] = tensor
        module.load_state_dict(part, strict=False, assign=True)
        del part
    return module.eval().requires_grad_(False)


def family_tokenizer(tokenizer: Any, folder: Path, bpe_class: Any = None) -> Any:
    """A family's tokenizer without remote code.

    ``tokenizer``: "auto" (the checkpoint folder's own), a folder or hub id, or an object (as
    is). Files are read natively: ``tokenizer.json`` as a fast tokenizer; else ``vocab.json`` with
    ``merges.txt`` through ``bpe_class`` (Dream's remote ``DreamTokenizer`` is Qwen2's byte-level
    BPE under another name). None, with a warning, when neither is there.
    """
    if not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    if not (isinstance(tokenizer, str) and tokenizer == "auto"):
        from ..hub import resolve_folder

        folder = resolve_folder(tokenizer)
    from transformers import PreTrainedTokenizerFast

    if (folder / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(str(folder))
    if bpe_class is not None and (folder / "vocab.json").exists() \
            and (folder / "merges.txt").exists():
        return bpe_class.from_pretrained(str(folder))
    warnings.warn(f"no tokenizer files in {folder} (tokenizer.json, or vocab.json with "
                  "merges.txt)", stacklevel=3)
    return None


def token_space(tokenizer: Any, cfg: dict, rows: int, where: str) -> TokenSpace:
    """The real ids of a checkpoint: every id its tokenizer defines but the mask; rows beyond
    the tokenizer are padding. The mask id is the config's ``mask_token_id``, else the
    tokenizer's; where both are given they must agree."""
    if tokenizer is None:
        raise ValueError(f"{where}: the tokenizer is needed to tell the real ids from the "
                         f"padding among the {rows} embedding rows; pass tokenizer=<folder or "
                         "hub id> or put the tokenizer files in the checkpoint folder")
    from_cfg = cfg.get("mask_token_id")
    from_tok = getattr(tokenizer, "mask_token_id", None)
    if from_cfg is not None and from_tok is not None and int(from_cfg) != int(from_tok):
        raise ValueError(f"{where}: config.json says mask_token_id {from_cfg}, the tokenizer's "
                         f"mask token has id {from_tok}")
    mask = from_cfg if from_cfg is not None else from_tok
    if mask is None:
        raise ValueError(f"{where}: no mask id (neither config.json's mask_token_id nor a "
                         "tokenizer mask token)")
    if len(tokenizer) > rows:
        raise ValueError(f"{where}: the tokenizer defines {len(tokenizer)} ids but the model "
                         f"has only {rows} embedding rows")
    return TokenSpace.from_tokenizer(tokenizer, int(mask), rows)
