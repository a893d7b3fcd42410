"""Generate and evaluate over a list of step counts.

    python -m experiments.run                                   # tiny models, one run
    python -m experiments.run -m guide=none,edlm,dcd            # a sweep (see conf/run.yaml)
    python -m experiments.run experiment=hmm_oracle steps=[1,2,4]
    torchrun --standalone --nproc_per_node=2 -m experiments.run ...  # sharded over ranks

For each entry of ``steps`` the run draws ``num_samples`` sequences in batches, batch b with a
generator seeded by (seed, num_steps, b), appends them to ``samples.jsonl`` as each batch
finishes, then scores them and appends one line to ``metrics.jsonl``. Rerunning the same
command resumes: finished step counts are skipped and unfinished ones continue from their
first missing batch (see ``experiments.store``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments import baselines
from experiments.cli import run_cli
from experiments.config import identity
from experiments.distributed import Group
from experiments.jobs import job_setup, progress_bar
from experiments.loggers import JsonlOnly
from experiments.paths import CONF_DIR
from experiments.provenance import gen_nll_se, provenance
from experiments.reference import reference_row
from experiments.session import Session
from experiments.store import RunStore, batch_plan

log = logging.getLogger(__name__)
COST_KEYS = ("nfe_denoiser", "nfe_ar", "ar_tokens")


def batch_seed(seed: int, num_steps: int, batch: int) -> int:
    """A 63-bit seed for one batch, stable across runs, resumptions and world sizes."""
    digest = hashlib.sha256(f"duet/{seed}/{num_steps}/{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _device(model) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()) if isinstance(
            model, torch.nn.Module) else []:
        return t.device
    return torch.device("cpu")


def generate_batch(s: Session, num_steps: int, batch: int, start: int, size: int) -> dict:
    """One batch: its cost line and its sample rows."""
    cfg = s.cfg
    gen = torch.Generator(_device(s.denoiser)).manual_seed(batch_seed(cfg.seed, num_steps, batch))
    prompt = None if s.prompts is None else s.prompts[start : start + size]
    res = s.coordinator.generate(size, int(cfg.length), num_steps, generator=gen,
                                 prompt=prompt, progress=bool(cfg.progress))
    ess = [r.ess for r in res.trace if r.ess is not None]
    cost = {"num_steps": num_steps, "batch": batch, "n": size, "seconds": res.seconds,
            "nfe_denoiser": res.nfe["denoiser"], "nfe_ar": res.nfe["ar_forwards"],
            "ar_tokens": res.nfe["ar_tokens"], "ess": sum(ess) / len(ess) if ess else None,
            "steps_used": res.steps_used, "denoiser_tokens": res.denoiser_tokens,
            "generated": size * int(cfg.length) if prompt is None
            else int((prompt == s.mask_id).sum())}
    tok = s.tokenizer
    rows = [{"num_steps": num_steps, "batch": batch, "index": start + i, "tokens": ids,
             "text": None if tok is None else tok.decode(ids)}
            for i, ids in enumerate(res.tokens.tolist())]
    if hasattr(s.task, "completion"):  # chat prompts: the completion, and the prompt's text
        for row in rows:
            row.update(s.task.completion(row["tokens"], s.prompts[row["index"]], s.mask_id))
    return {"cost": cost, "rows": rows}


def summarize(s: Session, num_steps: int, costs: list[dict], tokens: torch.Tensor) -> dict:
    """The metrics line of one step count, with its provenance.

    Forward counts are per batch (a forward serves every row of its batch, so this is what
    one sample's chain needs); ``ar_tokens`` is AR positions processed per sample, and
    ``denoiser_tokens`` the positions the denoiser's forwards ran per sample (fewer with a
    ``cache``).
    ``num_steps`` stays as configured; ``steps_used`` is the mean over samples of the steps
    each actually used (fewer for APD, windows for speculative decoding) and
    ``tokens_per_step`` the generated tokens per sample over it.
    """
    cfg = s.cfg
    t0 = time.perf_counter()
    quality = s.evaluator(tokens, s.prompts)
    quality["gen_nll_se"] = gen_nll_se(s.evaluator, tokens, s.prompts)
    seconds = sum(c["seconds"] for c in costs)
    n = tokens.shape[0]
    ess = [c["ess"] for c in costs if c["ess"] is not None]
    line = {**s.labels(), "num_steps": num_steps, "num_samples": n, "length": cfg.length,
            "batch_size": cfg.batch_size, "seed": cfg.seed, "temperature": cfg.temperature,
            "top_p": cfg.top_p, **quality,
            "nfe_denoiser": sum(c["nfe_denoiser"] for c in costs) / len(costs),
            "nfe_ar": sum(c["nfe_ar"] for c in costs) / len(costs),
            "ar_tokens": sum(c["ar_tokens"] for c in costs) / n,
            "denoiser_tokens": sum(c.get("denoiser_tokens", 0) for c in costs) / n,
            "cache": str(cfg.get("cache", "none")),
            "ess": sum(ess) / len(ess) if ess else None,
            **_tokens_per_step(costs, num_steps),
            "seconds": seconds, "samples_per_second": n / seconds if seconds > 0 else None,
            "eval_seconds": time.perf_counter() - t0}
    for key, value in provenance(cfg, s.denoiser, s.evaluator, n).items():
        line.setdefault(key, value)  # a value the evaluator reports itself wins
    return line


def _tokens_per_step(costs: list[dict], num_steps: int) -> dict:
    """Mean steps used per sample and generated tokens per step (older lines lack both)."""
    n = sum(c["n"] for c in costs)
    used = sum(c.get("steps_used", num_steps) * c["n"] for c in costs) / n
    if any("generated" not in c for c in costs):
        return {"steps_used": used, "tokens_per_step": None}
    return {"steps_used": used, "tokens_per_step": sum(c["generated"] for c in costs) / n / used}


def _reference(s: Session, store: RunStore, logger) -> None:
    if store.reference() is not None:
        return
    metrics = reference_row(s, s.name_of("judge"))
    if metrics is None:
        return
    store.write_reference(metrics)
    logger.log_reference(metrics)
    log.info("data reference: %s", {k: metrics.get(k) for k in ("gen_ppl", "entropy", "tv")
                                     if metrics.get(k) is not None})


def run(cfg: DictConfig, run_dir: str | Path, choices: dict | None = None) -> list[dict]:
    """Run every step count of ``cfg.steps`` into ``run_dir``; returns the metrics lines."""
    if cfg.get("task", "generate") == "lm_eval":  # lm-evaluation-harness tasks instead
        from experiments.lm_eval_run import run_lm_eval

        return run_lm_eval(cfg, run_dir, choices)
    s = Session(cfg, choices)
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    group = Group()
    log.info("rank %d of %d, %d torch threads, run dir %s", group.rank, group.world,
             torch.get_num_threads(), run_dir)
    store = RunStore(run_dir) if group.is_main else None
    try:
        state = None
        if group.is_main:
            store.open(identity(cfg), OmegaConf.to_yaml(cfg, resolve=True))
            state = store.state()
            state["baselines"] = baselines.pending(cfg, Path(run_dir))
        state = group.broadcast(state)
        todo = [int(t) for t in cfg.steps if int(t) not in state["finished"]]
        if todo or state["baselines"]:
            _run_steps(s, group, store, state, todo, Path(run_dir))
        elif group.is_main:
            log.info("already complete: nothing to do (%s)", run_dir)
            _replay(s, store, Path(run_dir))
        group.barrier()
        if not group.is_main:
            return []
        finished = store.state()["finished"]
        return [finished[int(t)] for t in cfg.steps if int(t) in finished]
    finally:
        if store is not None:
            store.close()
        group.close()


def _replay(s: Session, store: RunStore, run_dir: Path) -> None:
    """A finished run first seen by an extra logger (``logger=wandb`` on a rerun) gets the
    stored reference row, metrics and samples, without loading a model."""
    logger = s.build("logger")
    if type(logger) is JsonlOnly or not logger.needs_replay(run_dir):
        return
    logger.start(run_dir, s.resolved(), run_dir.name)
    try:
        ref = store.reference()
        if ref is not None:
            logger.log_reference(ref)
        finished = store.state()["finished"]
        for num_steps in sorted(finished):
            logger.log_step(finished[num_steps])
        for line in baselines.stored(run_dir):
            logger.log_baseline(line["baseline"], line)
        logger.log_samples(store.samples())
        log.info("logged the stored results to %s", type(logger).__name__)
    finally:
        logger.finish()


def _run_steps(s: Session, group: Group, store, state: dict, todo: list[int], run_dir: Path):
    cfg = s.cfg
    s.load()
    names = baselines.check(cfg.baselines, prompted=s.prompts is not None)
    logger = None
    if group.is_main:
        logger = s.build("logger")
        logger.start(run_dir, s.resolved(), run_dir.name)
        if s.tokenizer is not None:
            (run_dir / "tokenizer.txt").write_text(str(s.tokenizer.name_or_path))
        _reference(s, store, logger)
    plan = batch_plan(int(cfg.num_samples), int(cfg.batch_size))
    pending_of = {t: [p for p in plan if p[0] not in state["batches"].get(t, {})] for t in todo}
    bar = progress_bar(sum(map(len, pending_of.values())), s.cfg, group.is_main)
    try:
        for num_steps in todo:
            pending = pending_of[num_steps]
            if len(pending) < len(plan):
                log.info("steps=%d: resuming, %d of %d batches done", num_steps,
                         len(plan) - len(pending), len(plan))
            for r in range(0, len(pending), group.world):
                mine = pending[r : r + group.world]
                out = generate_batch(s, num_steps, *mine[group.rank]) \
                    if group.rank < len(mine) else None
                results = group.gather(out)
                if group.is_main:
                    for res in results:
                        if res is not None:
                            store.append_batch(res["cost"], res["rows"])
                            bar.advance(res["cost"]["n"], res["cost"]["seconds"], num_steps)
            if group.is_main:
                costs = list(store.state()["batches"][num_steps].values())
                line = summarize(s, num_steps, costs, store.tokens(num_steps))
                if store.append_metrics(line):
                    logger.log_step(line)
                log.info("steps=%d gen_ppl=%.3f entropy=%.3f seconds=%.1f", num_steps,
                         line["gen_ppl"], line["entropy"], line["seconds"])
            group.barrier()
        if group.is_main:
            baselines.run_baselines(s, names, run_dir, logger)
            logger.log_samples(store.samples())
    finally:
        bar.close()
        if logger is not None:
            logger.finish()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="run")
def main(cfg: DictConfig) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per checkpoint load clutters sweep logs
    hc = HydraConfig.get()
    job_setup(hc)
    run(cfg, hc.runtime.output_dir, dict(hc.runtime.choices))


def cli(argv: list[str] | None = None) -> None:
    """The command: checks the overrides' keys first, stops cleanly on Ctrl-C."""
    run_cli(main, "run", argv)


if __name__ == "__main__":
    cli()
