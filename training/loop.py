"""The training loop shared by every recipe: AdamW, warmup-cosine learning rate, a wall-clock
budget, gradient clipping, optional EMA, periodic validation; then final metrics and saving."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from training.evaluation import autocast, evaluate, final_metrics, pick_device
from training.saving import previous_log, save_run
from training.shakespeare import VALIDATION_WORKS, build_tokenizer, fixed_windows, random_windows
from training.shakespeare import streams as shakespeare_streams
from training.tokenizer import vocab_info

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


class Ema:
    """Exponential moving average of the parameters (MDLM keeps one, decay 0.9999).

    The decay ramps up as min(decay, (1 + n) / (10 + n)) over the n updates so far, so the
    average does not keep the initial weights for thousands of steps in a short run.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay, self.updates = decay, 0
        self.shadow = [p.detach().clone().float() for p in model.parameters()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        params = [p.detach().float() for p in model.parameters()]
        torch._foreach_lerp_(self.shadow, params, 1.0 - decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for p, s in zip(model.parameters(), self.shadow):
            p.copy_(s.to(p.dtype))


def train(cfg: DictConfig) -> dict:
    """Run one training job from a composed config; returns the summary written to disk."""
    torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(int(cfg.seed))
    device = pick_device(cfg.device)
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
    log.info("%s: %.2fM params, %d train / %d val tokens, device %s, %d threads",
             cfg.model.name, n_params / 1e6, train_stream.numel(), valid_stream.numel(),
             device, cfg.threads)

    run = fit(cfg, recipe, model, info, train_stream, val_subset, device)
    dtype = _DTYPES[cfg.save_dtype]
    model, metrics = final_metrics(recipe, model, val_all, info, int(cfg.seed), cfg.batch_size,
                                   device, dtype)
    summary = {
        "model": cfg.model.name, "params": n_params, "steps": run["steps"],
        "stopped_by_time_budget": run["stopped_early"], "batch_size": cfg.batch_size,
        "seq_len": cfg.seq_len, "tokens_seen": run["steps"] * cfg.batch_size * cfg.seq_len,
        "train_minutes": round(run["minutes"], 2), "threads": cfg.threads, "device": str(device),
        "validation_works": list(VALIDATION_WORKS), "val_windows": len(val_all),
        **{k: round(v, 4) for k, v in metrics.items()}, "history": run["history"],
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    previous = previous_log(cfg.init_from)
    if previous is not None:  # keep the earlier phase's record with the weights
        summary["continued_from"] = previous
    log.info("final: %s", {k: summary[k] for k in ("steps", "tokens_seen", *metrics)})
    out = save_run(recipe, model, tokenizer, dtype, summary, cfg.out_dir)
    log.info("saved %s", out)
    return summary


def fit(cfg: DictConfig, recipe, model: nn.Module, info, train_stream: Tensor,
        val_subset: Tensor, device: torch.device) -> dict:
    """The optimisation loop: steps until ``cfg.steps`` or the wall-clock budget.

    Leaves the final weights in ``model`` (the EMA's, when ``cfg.ema_decay`` > 0) and returns
    {"steps", "stopped_early", "minutes", "history"} (validation loss on ``val_subset`` every
    ``cfg.eval_every`` steps).
    """
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    schedule = instantiate(cfg.schedule)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    ema = Ema(model, float(cfg.ema_decay)) if cfg.ema_decay else None
    gen = torch.Generator().manual_seed(int(cfg.seed))

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
        with autocast(device):
            loss = recipe.loss(model, x, info, gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update(model)
        running.append(loss.item())
        step += 1
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val = evaluate(recipe, model, val_subset, info, cfg.seed, cfg.batch_size, device)
            elapsed = time.time() - start
            train_avg = sum(running) / len(running)
            history.append({"step": step, "train": train_avg, "val": val, "minutes": elapsed / 60})
            log.info("step %d/%d  train %.4f  val %.4f  lr %.2e  %.1f tok/s  %.1f min", step,
                     cfg.steps, train_avg, val, base_lrs[0] * factor,
                     step * cfg.batch_size * cfg.seq_len / elapsed, elapsed / 60)
            running = []
    minutes = (time.time() - start) / 60
    if ema is not None:  # the averaged weights are the ones measured and saved
        ema.copy_to(model)
    return {"steps": step, "stopped_early": stopped_early, "minutes": minutes,
            "history": history}
