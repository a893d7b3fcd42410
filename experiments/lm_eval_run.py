"""``python -m experiments.run task=lm_eval``: lm-evaluation-harness tasks scored with the
run's sampler, one metrics line per step count.

    python -m experiments.run task=lm_eval lm_eval.tasks=[gsm8k] steps=[64] device=cuda
    python -m experiments.run -m task=lm_eval lm_eval.tasks=[gsm8k] steps=[32,64] \\
        guide=none,dcd,apd strategy=left_to_right        # results.csv, frontier.png

Before any model loads: lm-eval is installed, every task name is known (lm-eval's own
message), a loglikelihood task has a scorer (``lm_eval.loglikelihood``), every generation's
``max_gen_toks`` leaves room for a prompt, a requested chat template exists. Then, for each
entry of ``steps`` not finished yet, ``lm_eval.simple_evaluate`` runs on
``experiments.lm_eval_model.DuetLM``; the run directory receives

    metrics.jsonl              one line per step count: accuracy ± standard error of every
                               task and metric, tokens per second, forwards per token, the
                               sampler's settings (also sent to the logger, W&B included)
    requests.jsonl             one line per request: forwards, tokens, seconds, the text
    lm_eval_steps<N>.json      lm-eval's results; lm_eval_samples_steps<N>.jsonl its samples
    lm_eval_cache/             finished requests (lm-eval's cache): an interrupted run resumes

A multirun's ``results.csv`` and ``frontier.png`` (accuracy against tokens per second) are
written by the sweep callback (``experiments.plot.summarize_sweep``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from experiments.config import ConfigError, _path, identity
from experiments.lm_eval_check import require_lm_eval
from experiments.provenance import software
from experiments.store import RunStore, atomic_write

log = logging.getLogger(__name__)
SCORED = ("loglikelihood", "loglikelihood_rolling", "multiple_choice")


def task_manager(spec: DictConfig):
    from lm_eval.tasks import TaskManager

    include = None
    if spec.include_path:
        include = _path(str(spec.include_path))
        if not Path(include).is_dir():
            raise ConfigError(f"lm_eval.include_path {spec.include_path} is not a folder")
    if include is None and not spec.include_defaults:
        raise ConfigError("lm_eval.include_defaults=false needs lm_eval.include_path")
    return TaskManager(include_path=include, include_defaults=bool(spec.include_defaults))


def load_tasks(manager, names: list[str]) -> dict:
    """{task name: lm-eval Task}; an unknown name fails with lm-eval's own message."""
    if not names:
        raise ConfigError("lm_eval.tasks is empty: name lm-eval tasks, e.g. lm_eval.tasks=[gsm8k]")
    try:
        return manager.load(list(names))["tasks"]
    except KeyError as err:
        raise ConfigError(f"lm_eval.tasks: {err.args[0] if err.args else err}") from err


def preflight(lm, tasks: dict, spec: DictConfig) -> None:
    """The checks of the module docstring, for every task, with no model loaded."""
    s = lm.session
    s.require_tokenizer()
    if spec.apply_chat_template:
        lm.chat_template(True)
    scored = sorted(n for n, t in tasks.items() if t.OUTPUT_TYPE in SCORED)
    if scored:
        lm.scorer.check(scored)
    max_len = s.max_length
    for name, task in tasks.items():
        if task.OUTPUT_TYPE != "generate_until":
            continue
        kwargs = dict(task.config.generation_kwargs or {})
        kwargs.update(OmegaConf.to_container(spec.gen_kwargs) if spec.gen_kwargs else {})
        gen = lm.max_gen_override or kwargs.get("max_gen_toks") or lm.default_max_gen_toks
        if max_len is not None and int(gen) >= max_len:
            raise ConfigError(f"max_gen_toks {gen} of task {name} leaves no room for a prompt "
                              f"in the {max_len}-token context of denoiser="
                              f"{s.name_of('denoiser')}; set lm_eval.max_gen_toks below it")


def run_lm_eval(cfg: DictConfig, run_dir: str | Path, choices: dict | None = None) -> list:
    """Every step count of ``cfg.steps`` into ``run_dir``; returns the metrics lines."""
    require_lm_eval()
    from experiments.lm_eval_model import DuetLM

    spec, run_dir = cfg.lm_eval, Path(run_dir)
    manager = task_manager(spec)
    tasks = load_tasks(manager, list(spec.tasks))
    lm = DuetLM(config=cfg, choices=choices, steps=int(cfg.steps[0]),
                loglikelihood=spec.loglikelihood, mc_samples=spec.mc_samples,
                mc_batch_size=spec.mc_batch_size, elbo_scheme=spec.elbo_scheme,
                stratified=spec.stratified, greedy_check=spec.greedy_check,
                max_gen_toks=spec.max_gen_toks, padding=spec.padding,
                add_bos_token=spec.add_bos_token, request_log=run_dir / "requests.jsonl")
    preflight(lm, tasks, spec)
    store = RunStore(run_dir)
    store.open(identity(cfg), OmegaConf.to_yaml(cfg, resolve=True))
    logger = None
    try:
        if not (run_dir / "identity.json").exists():
            atomic_write(run_dir / "identity.json", json.dumps(identity(cfg), indent=1,
                                                                sort_keys=True))
        finished = store.state()["finished"]
        todo = [int(t) for t in cfg.steps if int(t) not in finished]
        if not todo:
            log.info("already complete: nothing to do (%s)", run_dir)
            return [finished[int(t)] for t in cfg.steps]
        logger = lm.session.build("logger")
        logger.start(run_dir, OmegaConf.to_container(cfg, resolve=True), run_dir.name)
        for num_steps in todo:
            lm.num_steps = num_steps
            results = _evaluate(lm, manager, spec, run_dir, num_steps)
            line = summarize(results, lm, spec)
            if store.append_metrics(line):
                logger.log_step(line)
            log.info("steps=%d %s=%s tokens/s=%s", num_steps, line.get("metric"),
                     line.get("accuracy"), line.get("tokens_per_second"))
        logger.log_samples([{"num_steps": r["num_steps"], "index": i, "text": r.get("text"),
                             "tokens": []} for i, r in enumerate(lm.log.read())
                            if r.get("kind") == "generate_until"])
        finished = store.state()["finished"]
        return [finished[int(t)] for t in cfg.steps if int(t) in finished]
    finally:
        if logger is not None:
            logger.finish()
        store.close()


def _evaluate(lm, manager, spec: DictConfig, run_dir: Path, num_steps: int) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.utils import handle_non_serializable

    limit = spec.limit
    if limit is not None and limit >= 1:
        limit = int(limit)
    extra = {} if spec.fewshot_as_multiturn is None else \
        {"fewshot_as_multiturn": bool(spec.fewshot_as_multiturn)}
    (run_dir / "lm_eval_cache").mkdir(exist_ok=True)
    results = simple_evaluate(
        model=lm, tasks=list(spec.tasks), task_manager=manager, num_fewshot=spec.num_fewshot,
        limit=limit, bootstrap_iters=int(spec.bootstrap_iters), log_samples=True,
        apply_chat_template=spec.apply_chat_template,
        system_instruction=spec.system_instruction,
        gen_kwargs=OmegaConf.to_container(spec.gen_kwargs) if spec.gen_kwargs else None,
        use_cache=str(run_dir / "lm_eval_cache" / f"steps{num_steps}"),
        random_seed=int(lm.session.cfg.seed), numpy_random_seed=int(lm.session.cfg.seed),
        torch_random_seed=int(lm.session.cfg.seed),
        fewshot_random_seed=int(lm.session.cfg.seed),
        confirm_run_unsafe_code=bool(spec.confirm_run_unsafe_code), **extra)
    samples = results.pop("samples", {}) or {}
    dump = json.dumps(results, indent=1, default=handle_non_serializable)
    atomic_write(run_dir / f"lm_eval_steps{num_steps}.json", dump)
    atomic_write(run_dir / f"lm_eval_samples_steps{num_steps}.jsonl", "".join(
        json.dumps({"task": task, **row}, default=handle_non_serializable) + "\n"
        for task, rows in samples.items() for row in rows))
    results["samples"] = samples
    return results


def task_metrics(results: dict) -> dict:
    """{"<task>/<metric>[/<filter>]": value, ..."_se": standard error} from lm-eval's
    results (a standard error lm-eval could not compute is None)."""
    out = {}
    for task, values in (results.get("results") or {}).items():
        for key, value in values.items():
            if "," not in key or "_stderr," in key:
                continue
            metric, filt = key.split(",", 1)
            name = f"{task}/{metric}" + ("" if filt == "none" else f"/{filt}")
            se = values.get(f"{metric}_stderr,{filt}")
            out[name] = value if isinstance(value, (int, float)) else None
            out[f"{name}_se"] = se if isinstance(se, (int, float)) else None
    return out


def cost(lines: list[dict], num_steps: int) -> dict:
    """Throughput of one step count from the request log (each request once)."""
    seen, gen, scored = set(), [], []
    for r in lines:
        if r.get("num_steps") != num_steps or r.get("key") in seen:
            continue
        seen.add(r.get("key"))
        (gen if r.get("kind") == "generate_until" else scored).append(r)
    tokens = sum(r["tokens"] for r in gen)
    seconds = sum(r["seconds"] for r in gen)
    steps = [r["steps_used"] for r in gen if r.get("steps_used") is not None]

    def per_token(key):
        return sum(r[key] for r in gen) / tokens if tokens else None

    return {"generate_requests": len(gen), "generated_tokens": tokens,
            "generate_seconds": seconds,
            "tokens_per_second": tokens / seconds if seconds > 0 else None,
            "canvas_tokens_per_second": sum(r["canvas_tokens"] for r in gen) / seconds
            if seconds > 0 else None,
            "forwards_per_token": per_token("nfe_denoiser"),
            "ar_forwards_per_token": per_token("nfe_ar"),
            "tokens_per_step": tokens / sum(steps) if steps and sum(steps) else None,
            "stopped_by_until": sum(r.get("stop") == "until" for r in gen),
            "scored_requests": len(scored),
            "scored_forwards": sum(r.get("forwards", 0) for r in scored),
            "scored_seconds": sum(r.get("seconds", 0.0) for r in scored)}


def summarize(results: dict, lm, spec: DictConfig) -> dict:
    """The metrics line of one step count."""
    s, num_steps = lm.session, lm.num_steps
    metrics = task_metrics(results)
    names = [k for k in metrics if not k.endswith("_se")]
    primary = spec.metric or (names[0] if names else None)
    if primary is not None and primary not in metrics:
        raise ConfigError(f"lm_eval.metric {primary!r} is not among the results: "
                          f"{', '.join(names)}")
    line = {**s.labels(), "task": "lm_eval", "tasks": ",".join(spec.tasks),
            "num_steps": num_steps, "metric": primary,
            "accuracy": metrics.get(primary), "accuracy_se": metrics.get(f"{primary}_se"),
            **metrics, **cost(lm.log.read(), num_steps),
            "num_fewshot": spec.num_fewshot, "limit": spec.limit,
            "lm_eval_version": _lm_eval_version(),
            "sampler": json.dumps(lm.settings(), sort_keys=True, default=str)}
    for key, value in lm.settings().items():
        line.setdefault(key, value)
    line.update(software())
    n = [v.get("sample_len") for v in (results.get("results") or {}).values()]
    line["num_samples"] = sum(x for x in n if isinstance(x, int)) or None
    return line


def _lm_eval_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("lm_eval")
    except metadata.PackageNotFoundError:
        return None
