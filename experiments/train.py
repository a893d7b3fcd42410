"""Train one tiny model on the Shakespeare works (the embedded default models).

    python -m experiments.train model=ar_tiny
    python -m experiments.train model=judge_tiny threads=2 max_minutes=12
    python -m experiments.train model=denoiser_tiny steps=20 out_dir=/tmp/d   # smoke run

Each ``conf/model/*.yaml`` names a recipe (``_target_``): it builds the network from the
tokenizer's ids, gives the training loss on a (B, L) batch of token windows, the validation
metrics, and writes the checkpoint. The loop, schedule, time budget and logging are shared.
The final validation numbers are measured on every held-out window with the weights exactly as
saved, and written to ``train_log.json`` beside them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

import experiments.config  # noqa: F401  (the duet.* resolvers of conf/train.yaml)
from experiments.cli import hydra_main
from models.losses import ar_loss, mdlm_loss
from models.shakespeare import VALIDATION_WORKS, build_tokenizer, fixed_windows, random_windows
from models.shakespeare import streams as shakespeare_streams
from models.tokenizer import VocabInfo, vocab_info

log = logging.getLogger(__name__)
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class WarmupCosine:
    """Learning-rate factor: linear warmup to 1, then cosine decay to ``min_ratio``."""

    def __init__(self, warmup_steps: int = 100, min_ratio: float = 0.1):
        self.warmup_steps, self.min_ratio = int(warmup_steps), float(min_ratio)

    def __call__(self, step: int, total: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        frac = min(1.0, (step - self.warmup_steps) / max(1, total - self.warmup_steps))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * frac))


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
        nll = _mean_over_windows(lambda x: self.per_token(model, x, info, gen),
                                 windows, batch_size, device)
        return {"val_nll_per_token": nll, "val_ppl": math.exp(nll)}

    def load_weights(self, model: nn.Module, folder: Path) -> None:
        from transformers import GPT2LMHeadModel

        saved = GPT2LMHeadModel.from_pretrained(str(folder), dtype=torch.float32)
        model.load_state_dict(saved.state_dict(), strict=True)

    def save(self, model: nn.Module, folder: Path, tokenizer, dtype: torch.dtype) -> None:
        model.to(dtype).save_pretrained(str(folder), safe_serialization=True)
        tokenizer.save_pretrained(str(folder))


class DenoiserRecipe:
    """An MDLM denoiser on the DDiT backbone, saved in the duet-ddit format.

    Args:
        causal_fraction: share of training batches run with causal attention, so that the
            same weights also give usable prefix-only marginals (what DCD queries).
        time_conditioning: feed σ(t) to the backbone (MDLM's default is not to).
    """

    def __init__(self, hidden_size: int = 192, n_blocks: int = 4, n_heads: int = 3,
                 cond_dim: int = 128, dropout: float = 0.1, causal_fraction: float = 0.25,
                 time_conditioning: bool = False, eps: float = 1e-3, eval_repeats: int = 2):
        if not 0.0 <= causal_fraction <= 1.0:
            raise ValueError(f"causal_fraction must be in [0, 1], got {causal_fraction}")
        self.dims = dict(hidden_size=hidden_size, n_blocks=n_blocks, n_heads=n_heads,
                         cond_dim=cond_dim, dropout=dropout)
        self.causal_fraction, self.time_conditioning = causal_fraction, time_conditioning
        self.eps, self.eval_repeats = eps, eval_repeats

    def build(self, info: VocabInfo, seq_len: int) -> nn.Module:
        from models.ddit import DDiT, DDiTConfig

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
            return _mean_over_windows(lambda x: self._loss(model, x, info, gen, causal, "none"),
                                      windows, batch_size, device)

        # Several t draws per window: the 1/t weight makes a single draw noisy.
        out = {"val_nll_bound_per_token": sum(bound(False) for _ in range(self.eval_repeats))
               / self.eval_repeats, "val_causal_bound": bound(True)}
        out["val_ppl_bound"] = math.exp(out["val_nll_bound_per_token"])
        return out

    def load_weights(self, model: nn.Module, folder: Path) -> None:
        from models.loading import load_denoiser

        model.load_state_dict(load_denoiser(folder).backbone.state_dict(), strict=True)

    def save(self, model: nn.Module, folder: Path, tokenizer, dtype: torch.dtype) -> None:
        from models.denoisers import MDLMDenoiser
        from models.loading import save_denoiser

        denoiser = MDLMDenoiser(model.float(), time_conditioning=self.time_conditioning,
                                eps=self.eps, tokenizer=tokenizer)
        save_denoiser(denoiser, folder, dtype=dtype)


@torch.no_grad()
def _mean_over_windows(per_token, windows: Tensor, batch_size: int, device) -> float:
    """Mean of ``per_token(x) -> (B, L)`` over every token of ``windows`` (W, L)."""
    total, count = 0.0, 0
    for chunk in windows.split(batch_size):
        vals = per_token(chunk.to(device)).float()
        total, count = total + vals.sum().item(), count + vals.numel()
    return total / max(count, 1)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _autocast(device: torch.device):
    # bf16 only on GPU: on CPU it saved little and the DDiT keeps its norms in fp32 anyway.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _evaluate(recipe, model, windows, info, seed, batch_size, device) -> float:
    """Validation loss on a fixed window subset with a fixed generator (comparable over time)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with _autocast(device):
        value = _mean_over_windows(lambda x: recipe.per_token(model, x, info, gen),
                                   windows, batch_size, device)
    model.train()
    return value


def _replace_folder(tmp: Path, final: Path) -> None:
    """Swap a finished folder into place so a crash never leaves half a checkpoint."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def train(cfg: DictConfig) -> dict:
    """Run one training job from a composed config; returns the summary written to disk."""
    torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(int(cfg.seed))
    device = _device(cfg.device)
    tokenizer = build_tokenizer(cfg.tokenizer_dir)
    info = vocab_info(tokenizer)
    train_stream, valid_stream = shakespeare_streams(tokenizer)
    val_all = fixed_windows(valid_stream, cfg.seq_len, cfg.final_eval_windows)
    pick = torch.linspace(0, len(val_all) - 1, min(cfg.eval_windows, len(val_all))).long()
    val_subset = val_all[pick]  # spread over all held-out works, not just the first one

    recipe = instantiate(cfg.model.recipe)
    model = recipe.build(info, cfg.seq_len)
    if cfg.init_from:  # continue from a saved folder (a new schedule; steps count afresh)
        recipe.load_weights(model, Path(cfg.init_from))
    model = model.to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    schedule = instantiate(cfg.schedule)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    gen = torch.Generator().manual_seed(int(cfg.seed))
    log.info("%s: %.2fM params, %d train / %d val tokens, device %s, %d threads",
             cfg.model.name, n_params / 1e6, train_stream.numel(), valid_stream.numel(),
             device, cfg.threads)

    start, history, running, step = time.time(), [], [], 0
    budget_s = float(cfg.max_minutes) * 60 if cfg.max_minutes else math.inf
    stopped_early = False
    while step < cfg.steps:
        if time.time() - start > budget_s:
            stopped_early = True
            log.info("time budget of %s min reached at step %d", cfg.max_minutes, step)
            break
        position = step
        if cfg.time_schedule and budget_s < math.inf:
            # On a shared machine the step rate drifts: follow whichever of steps and wall-clock
            # is further along, so the cosine still ends at min_ratio when the budget runs out.
            position = max(step, int(cfg.steps * (time.time() - start) / budget_s))
        factor = schedule(position, cfg.steps)
        for group, lr in zip(optimizer.param_groups, base_lrs):
            group["lr"] = lr * factor
        x = random_windows(train_stream, cfg.batch_size, cfg.seq_len, gen).to(device)
        with _autocast(device):
            loss = recipe.loss(model, x, info, gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        running.append(loss.item())
        step += 1
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val = _evaluate(recipe, model, val_subset, info, cfg.seed, cfg.batch_size, device)
            elapsed = time.time() - start
            train_avg = sum(running) / len(running)
            history.append({"step": step, "train": train_avg, "val": val, "minutes": elapsed / 60})
            log.info("step %d/%d  train %.4f  val %.4f  lr %.2e  %.1f tok/s  %.1f min", step,
                     cfg.steps, train_avg, val, base_lrs[0] * factor,
                     step * cfg.batch_size * cfg.seq_len / elapsed, elapsed / 60)
            running = []
    train_minutes = (time.time() - start) / 60

    # Measure the weights exactly as they will be stored.
    dtype = _DTYPES[cfg.save_dtype]
    model = model.to(dtype).float().eval()
    final_gen = torch.Generator().manual_seed(int(cfg.seed) + 2)
    with _autocast(device):
        metrics = recipe.metrics(model, val_all, info, final_gen, cfg.batch_size, device)
    summary = {
        "model": cfg.model.name, "params": n_params, "steps": step,
        "stopped_by_time_budget": stopped_early, "batch_size": cfg.batch_size,
        "seq_len": cfg.seq_len, "tokens_seen": step * cfg.batch_size * cfg.seq_len,
        "train_minutes": round(train_minutes, 2), "threads": cfg.threads, "device": str(device),
        "validation_works": list(VALIDATION_WORKS), "val_windows": len(val_all),
        **{k: round(v, 4) for k, v in metrics.items()}, "history": history,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    previous = Path(cfg.init_from or "") / "train_log.json"
    if cfg.init_from and previous.is_file():  # keep the earlier phase's record with the weights
        summary["continued_from"] = json.loads(previous.read_text())
    log.info("final: %s", {k: summary[k] for k in ("steps", "tokens_seen", *metrics)})

    out = Path(cfg.out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "train_log.json").write_text(json.dumps(summary, indent=2) + "\n")
    recipe.save(model.cpu(), tmp, tokenizer, dtype)
    tokenizer.save_pretrained(str(tmp))  # each folder loads on its own
    _replace_folder(tmp, out)
    log.info("saved %s", out)
    return summary


@hydra_main("train")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
