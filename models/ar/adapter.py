"""An ARModel adapter over transformers causal LMs (loaded by ``models.ar.loading.load_ar``).

``HFCausalLM`` satisfies ``decoding.protocols.ARModel``: batch scoring with the model's own BOS
prepended, and an incremental API over a transformers KV cache (dynamic by default, or static:
see ``models.ar.kv_cache``) whose first entry is always that BOS (so ``crop(cache, 0)`` returns to
the state right after ``start``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from decoding.checks import device_check

from ..tokenizer_check import real_tokens
from .kv_cache import check_kind, compiled_step, new_cache

__all__ = ["ARCache", "HFCausalLM"]

SLICE_ELEMENTS = 1 << 22  # log-softmax entries per slice in token_log_probs (16 MiB float32)


@dataclass
class ARCache:
    """Incremental state: ``kv`` holds BOS plus ``length`` fed tokens for ``batch_size`` rows."""

    kv: Any
    length: int
    batch_size: int


class HFCausalLM(nn.Module):
    """A transformers causal LM as an ARModel.

    Args:
        model: a transformers causal LM (``GPT2LMHeadModel``, ``AutoModelForCausalLM`` ...).
        tokenizer: optional tokenizer; supplies the BOS id and the real vocabulary size.
        bos_id: the context token scored before position 0 (default: the tokenizer's, else the
            model config's ``bos_token_id``; GPT-2: 50256).
        vocab_size: the real vocabulary; the adapter uses min(config vocab, this or the
            tokenizer's length less a mask token listed last), so padded embedding rows are
            never returned (GPT-2: 50257).
        max_batch_tokens: ``log_probs`` scores at most about this many tokens per forward.
        cache: "dynamic" (grows by concatenation; the faster one on a CPU) or "static"
            (preallocated to the model's maximum length; crop moves a pointer).
        compile_step: with the static cache on CUDA, run one-token steps through
            ``torch.compile(mode="reduce-overhead")`` (CUDA graphs). Refused on other devices.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any = None,
        bos_id: int | None = None,
        vocab_size: int | None = None,
        max_batch_tokens: int = 8192,
        cache: str = "dynamic",
        compile_step: bool = False,
    ):
        super().__init__()
        self.model = model.eval()
        self.tokenizer = tokenizer
        config = model.config
        if bos_id is None and tokenizer is not None:
            bos_id = tokenizer.bos_token_id
        if bos_id is None:
            bos_id = getattr(config, "bos_token_id", None)
        if bos_id is None:
            raise ValueError(
                "the AR model has no BOS token (neither tokenizer.bos_token_id nor "
                "config.bos_token_id is set); pass bos_id= explicitly"
            )
        model_vocab = int(config.vocab_size)
        given = vocab_size if vocab_size is not None else real_tokens(tokenizer, model_vocab)
        self.vocab_size = min(model_vocab, int(given))
        if not 0 <= int(bos_id) < model_vocab:
            raise ValueError(f"bos_id {bos_id} is outside the model's {model_vocab} embeddings")
        self.bos_id = int(bos_id)
        self.max_length = self._max_positions(config)
        self.max_batch_tokens = int(max_batch_tokens)
        check_kind(cache, compile_step)
        self.cache_kind, self.compile_step = cache, bool(compile_step)
        self._step_fn = None  # the compiled one-token forward, built on first use
        params = inspect.signature(model.forward).parameters
        # transformers 5.x renamed past_key_values to cache; accept either generation.
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    @staticmethod
    def _max_positions(config: Any) -> int | None:
        for name in ("n_positions", "max_position_embeddings"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    @property
    def context(self) -> int | None:
        """Most inputs (BOS included) one prediction can depend on; None: the whole prefix.

        With sliding-window attention of w positions in each of n layers, row i depends on
        inputs i - n(w-1) .. i only. The model's own mask enforces the window in every path;
        the cache still keeps every position (full layers), so ``crop`` can return to any
        prefix and the windowed mask gives exactly the batch path's numbers.
        """
        config = self.model.config
        window = getattr(config, "sliding_window", None)
        kinds = getattr(config, "layer_types", None) or ()
        if (not isinstance(window, int) or window <= 0
                or getattr(config, "use_sliding_window", True) is False
                or any(kind != "sliding_attention" for kind in kinds)):
            return None  # some layer sees the whole prefix
        return int(config.num_hidden_layers) * (window - 1) + 1

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _check_ids(self, x: Tensor, context: int) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 2:
            raise ValueError(f"tokens must be a (B, L) tensor, got {getattr(x, 'shape', type(x))}")
        if x.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"tokens must be integer ids, got dtype {x.dtype}")
        if x.numel():
            ends = torch.stack([x.min(), x.max()])  # checked on the device (decoding.checks)
            device_check((ends[0] >= 0) & (ends[1] < self.vocab_size), lambda: (
                f"token ids must lie in [0, {self.vocab_size}) for the AR model; got values "
                f"in [{int(ends[0])}, {int(ends[1])}] (a mask id must never reach the AR model)"))
        total = context + x.shape[1]  # positions the model is fed, BOS included
        if self.max_length is not None and total > self.max_length:
            raise ValueError(
                f"{total} positions fed (BOS included) exceed the AR model's maximum "
                f"{self.max_length}"
            )
        return x.long().to(self.device)

    def _log_softmax(self, logits: Tensor) -> Tensor:
        return torch.log_softmax(logits[..., : self.vocab_size].float(), dim=-1)

    def _forward(self, ids: Tensor, kv: Any = None, past: int = 0) -> Tensor:
        """Logits of ``ids`` fed after ``past`` cached positions (BOS included)."""
        kwargs = {self._cache_kw: kv, "use_cache": kv is not None}
        # Nothing is padded; an explicit all-ones mask says so (transformers warns otherwise
        # when a real token shares the pad id). A static cache is masked over its full
        # length: entries past the pointer are never attended, attention being causal.
        static = self.cache_kind == "static" and kv is not None
        width = self.max_length if static else past + ids.shape[1]
        mask = torch.ones(ids.shape[0], width, dtype=torch.long, device=ids.device)
        model = self.model
        if static and self.compile_step and ids.shape[1] == 1:
            if self._step_fn is None:
                self._step_fn = compiled_step(self.model, ids.device)
            model = self._step_fn
        return model(input_ids=ids, attention_mask=mask, **kwargs).logits

    def log_probs(self, x: Tensor) -> Tensor:
        """(B, L) long -> (B, L, V) float32; row i = log p(x_i | BOS, x_<i).

        The model is fed BOS + x_<L-1 (L positions): the last token is scored, never fed, so
        L may equal the model's context.
        """
        with torch.inference_mode():
            x = self._check_ids(x, context=0)
            b, length = x.shape
            if length == 0:
                return torch.zeros(b, 0, self.vocab_size, device=x.device)
            bos = torch.full((b, 1), self.bos_id, dtype=torch.long, device=x.device)
            return self._score(torch.cat([bos, x[:, :-1]], dim=1))

    def next_log_probs(self, x: Tensor) -> Tensor:
        """(B, L) long -> (B, L, V) float32 with no BOS: row i = log p(next | x_0..x_i).

        For windows of a longer text (a judge's sliding windows, the no-BOS gen-PPL
        convention): x_0 is context only, and row L-1 predicts the token after the window.
        """
        with torch.inference_mode():
            x = self._check_ids(x, context=0)
            if x.shape[1] == 0:
                return torch.zeros(x.shape[0], 0, self.vocab_size, device=x.device)
            return self._score(x)

    def _score(self, inputs: Tensor) -> Tensor:
        with torch.inference_mode():
            length = inputs.shape[1]
            rows = max(1, self.max_batch_tokens // length)
            return torch.cat(
                [self._log_softmax(self._forward(chunk)) for chunk in inputs.split(rows)], dim=0
            )

    def token_log_probs(self, x: Tensor) -> Tensor:
        """(B, L) long -> (B, L) float32 log p(x_i | BOS, x_<i): ``log_probs`` gathered at x.

        The forwards are those of ``log_probs``; the log-softmax runs on slices of positions
        and keeps only the scored tokens, so no (B, L, V) log-probs are held. Like
        ``log_probs``, BOS + L - 1 positions are fed.
        """
        with torch.inference_mode():
            x = self._check_ids(x, context=0)
            b, length = x.shape
            out = torch.zeros(b, length, device=x.device)
            if length == 0:
                return out
            bos = torch.full((b, 1), self.bos_id, dtype=torch.long, device=x.device)
            inputs = torch.cat([bos, x[:, :-1]], dim=1)
            rows = max(1, self.max_batch_tokens // length)
            for start in range(0, b, rows):
                logits = self._forward(inputs[start : start + rows])
                width = max(1, SLICE_ELEMENTS // (logits.shape[0] * logits.shape[-1]))
                for j in range(0, length, width):
                    lp = self._log_softmax(logits[:, j : j + width])
                    tgt = x[start : start + rows, j : j + width, None]
                    out[start : start + rows, j : j + width] = lp.gather(-1, tgt).squeeze(-1)
            return out

    def start(self, batch_size: int) -> tuple[Tensor, ARCache]:
        """Feed BOS to ``batch_size`` rows: returns (log p(x_0 | BOS) (B, V), cache of length 0)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if self.compile_step and self.device.type != "cuda":
            compiled_step(self.model, self.device)  # raises with the reason
        with torch.inference_mode():
            kv = new_cache(self.model, self.cache_kind, self.max_length)
            bos = torch.full((batch_size, 1), self.bos_id, dtype=torch.long, device=self.device)
            logp = self._log_softmax(self._forward(bos, kv))[:, 0]
        return logp, ARCache(kv=kv, length=0, batch_size=batch_size)

    def extend(self, cache: ARCache, tokens: Tensor) -> Tensor:
        """Feed (B, n) tokens; returns (B, n, V), row j = log p(next | cache, tokens[:, :j+1])."""
        with torch.inference_mode():
            tokens = self._check_ids(tokens, context=1 + cache.length)
            if tokens.shape[0] != cache.batch_size:
                raise ValueError(
                    f"tokens have {tokens.shape[0]} rows but the cache holds {cache.batch_size}"
                )
            if tokens.shape[1] == 0:
                return torch.zeros(cache.batch_size, 0, self.vocab_size, device=tokens.device)
            logp = self._log_softmax(self._forward(tokens, cache.kv, past=1 + cache.length))
            cache.length += tokens.shape[1]
        return logp

    def crop(self, cache: ARCache, length: int) -> None:
        """Keep the first ``length`` fed tokens (BOS is kept and not counted)."""
        if not 0 <= length <= cache.length:
            raise ValueError(f"crop length must be in [0, {cache.length}], got {length}")
        remove = cache.length - length
        if remove:
            # A negative argument means "drop this many" in every transformers version; a
            # positive one meant "keep this many" before 5.x and is refused now.
            with torch.inference_mode():
                cache.kv.crop(-remove)
        cache.length = length

    def reorder(self, cache: ARCache, index: Tensor) -> None:
        """Replace the cache's rows by ``rows[index]``; index (B',) long may repeat or drop rows."""
        index = torch.as_tensor(index)
        if index.dim() != 1 or index.dtype not in (torch.int64, torch.int32):
            raise ValueError("index must be a 1-D integer tensor")
        if index.numel() == 0:
            raise ValueError("index must select at least one row")
        if int(index.min()) < 0 or int(index.max()) >= cache.batch_size:
            raise ValueError(f"index values must lie in [0, {cache.batch_size})")
        with torch.inference_mode():
            cache.kv.reorder_cache(index.long().to(self.device))
        cache.batch_size = int(index.numel())

