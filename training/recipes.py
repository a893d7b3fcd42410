"""Training recipes: what each tiny model is, its loss, its validation metrics and its format.

A recipe is selected by ``_target_`` in ``conf/model/*.yaml``; the loop (:mod:`training.loop`)
is shared. Every recipe has ``build(info, seq_len)``, ``loss(model, x, info, gen)`` (scalar),
``per_token(model, x, info, gen)`` ((B, L) values whose mean is the validation loss),
``metrics(...)`` (the final figures), ``load_weights(model, folder)`` and
``save(model, folder, tokenizer, dtype)``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from decoding.schedules import EPS
from training.evaluation import mean_over_windows
from training.losses import ar_loss, mdlm_loss
from training.tokenizer import VocabInfo


class ARRecipe:
    """A GPT-2 shaped causal LM over the V real tokens (the AR guide and the judge).

    Windows are scored after the tokenizer's BOS, so ``n_positions`` defaults to L + 1.
    """

    def __init__(self, n_embd: int = 128, n_layer: int = 4, n_head: int = 4,
                 dropout: float = 0.1, n_positions: int | None = None):
        self.n_embd, self.n_layer, self.n_head = n_embd, n_layer, n_head
        self.dropout, self.n_positions = dropout, n_positions

    def build(self, info: VocabInfo, seq_len: int) -> nn.Module:
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(
            vocab_size=info.vocab_size, n_positions=self.n_positions or seq_len + 1,
            n_embd=self.n_embd, n_layer=self.n_layer, n_head=self.n_head,
            resid_pdrop=self.dropout, embd_pdrop=self.dropout, attn_pdrop=self.dropout,
            bos_token_id=info.bos_id, eos_token_id=info.eos_id, pad_token_id=info.pad_id,
        )
        return GPT2LMHeadModel(config)

    def loss(self, model: nn.Module, x: Tensor, info: VocabInfo, gen: torch.Generator) -> Tensor:
        return ar_loss(model, x, info.bos_id)

    def per_token(self, model, x: Tensor, info: VocabInfo, gen) -> Tensor:
        """(B, L) NLL of each token given BOS and its prefix."""
        return ar_loss(model, x, info.bos_id, "none")

    def metrics(self, model, windows, info, gen, batch_size: int, device) -> dict:
        nll = mean_over_windows(lambda x: self.per_token(model, x, info, gen),
                                 windows, batch_size, device)
        return {"val_nll_per_token": nll, "val_ppl": math.exp(nll)}

    def load_weights(self, model: nn.Module, folder: Path) -> None:
        from transformers import AutoModelForCausalLM

        saved = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        model.load_state_dict(saved.state_dict(), strict=True)

    def save(self, model: nn.Module, folder: Path, tokenizer, dtype: torch.dtype) -> None:
        model.to(dtype).save_pretrained(str(folder), safe_serialization=True)
        tokenizer.save_pretrained(str(folder))


class WindowedARRecipe(ARRecipe):
    """A causal LM that sees only the last few tokens: the small AR guide of the default pair.

    Mistral shape (RoPE, SwiGLU, sliding-window attention, tied embeddings). Each layer attends
    to the last ``window`` positions (itself included), so the prediction of x_i depends on at
    most ``n_layer * (window - 1) + 1`` preceding inputs (BOS included while it is that close);
    the model's own attention mask enforces this in the batch and the cached paths alike, and
    positions enter only through relative rotations, so a window looks the same wherever it is.
    A guide supplies local dependencies (the denoiser sees the whole sequence); limiting its
    context weakens it without blurring it (DCD needs a guide that is sharp where it is right).
    """

    def __init__(self, n_embd: int = 128, n_layer: int = 2, n_head: int = 4,
                 intermediate_size: int = 256, window: int = 8, dropout: float = 0.0):
        if window < 1:
            raise ValueError(f"window must be >= 1 position (1: a bigram model), got {window}")
        super().__init__(n_embd=n_embd, n_layer=n_layer, n_head=n_head, dropout=dropout)
        self.intermediate_size, self.window = intermediate_size, window

    def build(self, info: VocabInfo, seq_len: int) -> nn.Module:
        from transformers import MistralConfig, MistralForCausalLM

        config = MistralConfig(
            vocab_size=info.vocab_size, hidden_size=self.n_embd,
            intermediate_size=self.intermediate_size, num_hidden_layers=self.n_layer,
            num_attention_heads=self.n_head, num_key_value_heads=self.n_head,
            sliding_window=self.window, max_position_embeddings=seq_len + 1,
            attention_dropout=self.dropout, tie_word_embeddings=True,
            bos_token_id=info.bos_id, eos_token_id=info.eos_id, pad_token_id=info.pad_id,
        )
        return MistralForCausalLM(config)


class DenoiserRecipe:
    """An MDLM denoiser on the DDiT backbone, saved in the duet-ddit format.

    Args:
        causal_fraction: share of training batches run with causal attention, so that the
            same weights also give usable prefix-only marginals (what DCD queries).
        time_conditioning: feed σ(t) to the backbone (MDLM's default is not to).
    """

    def __init__(self, hidden_size: int = 192, n_blocks: int = 4, n_heads: int = 3,
                 cond_dim: int = 128, dropout: float = 0.1, causal_fraction: float = 0.25,
                 time_conditioning: bool = False, eps: float = EPS, eval_repeats: int = 2):
        if not 0.0 <= causal_fraction <= 1.0:
            raise ValueError(f"causal_fraction must be in [0, 1], got {causal_fraction}")
        self.dims = dict(hidden_size=hidden_size, n_blocks=n_blocks, n_heads=n_heads,
                         cond_dim=cond_dim, dropout=dropout)
        self.causal_fraction, self.time_conditioning = causal_fraction, time_conditioning
        self.eps, self.eval_repeats = eps, eval_repeats

    def build(self, info: VocabInfo, seq_len: int) -> nn.Module:
        from models.ddit.backbone import DDiT, DDiTConfig

        # vocab_size counts the mask row: the engine wants the mask id outside 0..V-1.
        return DDiT(DDiTConfig(vocab_size=info.vocab_size + 1, max_length=seq_len, **self.dims))

    def _loss(self, model, x, info, gen, causal: bool, reduction: str = "mean") -> Tensor:
        return mdlm_loss(model, x, info.mask_id, gen, causal=causal, eps=self.eps,
                         time_conditioning=self.time_conditioning, reduction=reduction)

    def loss(self, model: nn.Module, x: Tensor, info: VocabInfo, gen: torch.Generator) -> Tensor:
        causal = bool(torch.rand((), generator=gen) < self.causal_fraction)
        return self._loss(model, x, info, gen, causal)

    def per_token(self, model, x: Tensor, info: VocabInfo, gen) -> Tensor:
        """(B, L) per-position terms of the bidirectional bound (their mean is the bound)."""
        return self._loss(model, x, info, gen, causal=False, reduction="none")

    def metrics(self, model, windows, info, gen, batch_size: int, device) -> dict:
        def bound(causal: bool) -> float:
            return mean_over_windows(lambda x: self._loss(model, x, info, gen, causal, "none"),
                                      windows, batch_size, device)

        # Several t draws per window: the 1/t weight makes a single draw noisy.
        out = {"val_nll_bound_per_token": sum(bound(False) for _ in range(self.eval_repeats))
               / self.eval_repeats, "val_causal_bound": bound(True)}
        out["val_ppl_bound"] = math.exp(out["val_nll_bound_per_token"])
        return out

    def load_weights(self, model: nn.Module, folder: Path) -> None:
        from models.families import load_denoiser

        model.load_state_dict(load_denoiser(folder).backbone.state_dict(), strict=True)

    def save(self, model: nn.Module, folder: Path, tokenizer, dtype: torch.dtype) -> None:
        from models.ddit.heads import MDLMDenoiser
        from models.ddit.saving import save_denoiser

        denoiser = MDLMDenoiser(model.float(), time_conditioning=self.time_conditioning,
                                eps=self.eps, tokenizer=tokenizer)
        save_denoiser(denoiser, folder, dtype=dtype)
