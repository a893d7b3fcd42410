"""The engine's token ids as a model's ids: an explicit set of real ids, mapped at the edges.

The engine (``decoding``) numbers real tokens ``0..V-1`` and puts the mask at ``V``. Today's
checkpoints do not: Dream's ``<|mask|>`` (151666) sits inside its 152064 embedding rows, LLaDA's
(126336) below its chat tokens, DiffuGPT-small reuses GPT-2's ordinary token 10541 as its mask;
rows beyond the tokenizer are padding. A ``TokenSpace`` names the model ids that are real tokens
(sorted) and the model's mask id, and translates: engine ids to model ids on the way in, the real
columns out of the model's logits on the way out, and back for text. Marginals computed through
it put exactly zero mass on the mask and on padding rows, because those columns never exist in
the engine's space; and no engine code has to learn about excluded columns (an excluded column
kept as -inf would turn DCD's log-ratio and the entropy and margin scores into NaN).

Where the real ids are ``0..V-1`` and the mask is ``V`` (SEDD, MDLM, BD3-LM, Dream alone) the
space is the identity and costs nothing: the output columns are a view.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["EngineTokenizer", "TokenSpace", "engine_tokenizer"]


class TokenSpace:
    """Real ids of a model, in engine order.

    Args:
        ids: the model ids of the real tokens (any order; kept sorted, unique).
        mask_token: the model's own mask id (fed to the model for the engine's mask ``V``).
        rows: the model's number of output columns (embedding rows).
    """

    def __init__(self, ids: Any, mask_token: int, rows: int):
        ids = torch.as_tensor(ids, dtype=torch.long).flatten().unique(sorted=True)
        if ids.numel() == 0:
            raise ValueError("a token space needs at least one real id")
        if int(ids[0]) < 0 or int(ids[-1]) >= rows:
            raise ValueError(f"real ids must lie in [0, {rows}), got [{int(ids[0])}, "
                             f"{int(ids[-1])}]")
        if not 0 <= mask_token < rows or bool((ids == mask_token).any()):
            raise ValueError(f"the mask id {mask_token} must be one of the model's {rows} rows "
                             "and not a real token")
        self.ids, self.mask_token, self.rows = ids, int(mask_token), int(rows)
        self.size = int(ids.numel())
        self.identity = bool(int(ids[-1]) == self.size - 1)  # ids are exactly 0..V-1
        self.trivial = self.identity and self.mask_token == self.size  # and the mask is V
        self._in = torch.cat([ids, torch.tensor([self.mask_token])])
        out = torch.full((rows,), -1, dtype=torch.long)
        out[ids] = torch.arange(self.size)
        out[self.mask_token] = self.size
        self._out = out

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, mask_token: int, rows: int,
                       exclude: tuple[int, ...] = ()) -> TokenSpace:
        """Every id the tokenizer defines but the mask and ``exclude``; later rows are padding."""
        n = min(len(tokenizer), rows)
        keep = torch.ones(n, dtype=torch.bool)
        for i in (mask_token, *exclude):
            if 0 <= i < n:
                keep[i] = False
        return cls(torch.arange(n)[keep], mask_token, rows)

    def __repr__(self) -> str:
        kind = "identity" if self.identity else "mapped"
        return f"TokenSpace({self.size} real of {self.rows} rows, mask {self.mask_token}, {kind})"

    @property
    def mask_id(self) -> int:
        """The engine's mask id: ``V``."""
        return self.size

    def to_model(self, x: Tensor) -> Tensor:
        """(...) engine ids (real or ``V``) -> model ids (the engine's mask -> the model's)."""
        if self.trivial:
            return x
        return self._in.to(x.device)[x]

    def to_engine(self, ids: Tensor) -> Tensor:
        """(...) model ids -> engine ids; ValueError on an id that is neither real nor the mask."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.rows):
            raise ValueError(f"token ids must lie in [0, {self.rows})")
        out = self._out.to(ids.device)[ids]
        if bool((out < 0).any()):
            bad = sorted({int(i) for i in ids[out < 0].flatten()[:8]})
            raise ValueError(f"ids {bad} are not real tokens of this model (padding rows or "
                             "excluded specials)")
        return out

    def columns(self, logits: Tensor) -> Tensor:
        """(..., rows) model logits -> (..., V) logits of the real tokens (a view if identity)."""
        if logits.shape[-1] != self.rows:
            raise ValueError(f"expected {self.rows} logit columns, got {logits.shape[-1]}")
        if self.identity:
            return logits[..., : self.size]
        return logits.index_select(-1, self.ids.to(logits.device))

    def restrict(self, ids: Any) -> TokenSpace:
        """The same model on a subset of its real ids (the ids a pairing shares)."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        extra = ids[self._out[ids.clamp(0, self.rows - 1)] < 0]
        if bool((ids >= self.rows).any()) or extra.numel():
            raise ValueError(f"ids outside this space: {extra[:8].tolist()}")
        return TokenSpace(ids, self.mask_token, self.rows)


class EngineTokenizer:
    """A transformers tokenizer seen in engine ids (for a space that is not the identity).

    Encoding maps the tokenizer's ids to engine ids; decoding maps them back; the special ids
    (EOS, BOS, PAD) are the engine's. Everything else is the wrapped tokenizer's.
    """

    def __init__(self, tokenizer: Any, space: TokenSpace):
        self.tokenizer, self.space = tokenizer, space

    def __len__(self) -> int:
        return self.space.size

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)

    def _engine(self, tok_id: int | None) -> int | None:
        if tok_id is None or tok_id == self.space.mask_token:
            return None if tok_id is None else self.space.mask_id
        out = int(self.space._out[tok_id]) if 0 <= tok_id < self.space.rows else -1
        return None if out < 0 else out

    eos_token_id = property(lambda self: self._engine(self.tokenizer.eos_token_id))
    bos_token_id = property(lambda self: self._engine(self.tokenizer.bos_token_id))
    pad_token_id = property(lambda self: self._engine(self.tokenizer.pad_token_id))
    mask_token_id = property(lambda self: self.space.mask_id)

    def _map_in(self, ids: Any) -> Any:
        if isinstance(ids, Tensor):
            return self.space.to_engine(ids)
        if ids and isinstance(ids[0], (list, tuple)):
            return [self._map_in(row) for row in ids]
        return self.space.to_engine(torch.tensor(list(ids), dtype=torch.long)).tolist()

    def _map_out(self, ids: Any) -> list[int]:
        ids = torch.as_tensor(ids, dtype=torch.long)
        return self.space._in[ids].tolist()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        enc = self.tokenizer(*args, **kwargs)
        enc["input_ids"] = self._map_in(enc["input_ids"])
        return enc

    def encode(self, *args: Any, **kwargs: Any) -> list[int]:
        return self._map_in(self.tokenizer.encode(*args, **kwargs))

    def decode(self, ids: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(self._map_out(ids), **kwargs)

    def batch_decode(self, rows: Any, **kwargs: Any) -> list[str]:
        return [self.decode(r, **kwargs) for r in rows]

    def convert_ids_to_tokens(self, ids: Any) -> Any:
        if isinstance(ids, int):
            return self.tokenizer.convert_ids_to_tokens(int(self.space._in[ids]))
        return self.tokenizer.convert_ids_to_tokens(self._map_out(ids))

    def apply_chat_template(self, *args: Any, **kwargs: Any) -> Any:
        out = self.tokenizer.apply_chat_template(*args, **kwargs)
        if kwargs.get("tokenize", True) is False:
            return out
        if hasattr(out, "keys"):  # transformers 5 returns an encoding
            out["input_ids"] = self._map_in(out["input_ids"])
            return out
        return self._map_in(out)


def engine_tokenizer(tokenizer: Any, space: TokenSpace | None) -> Any:
    """The tokenizer as the engine must see it: as is for an identity space, else wrapped."""
    if tokenizer is None or space is None or space.trivial:
        return tokenizer
    return EngineTokenizer(tokenizer, space)
