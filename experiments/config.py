"""The run schema, config resolvers, value checks, and instantiation with clear errors.

``RunConfig`` is the typed top level of ``conf/run.yaml``: a key it does not declare (a typo
in an experiment preset or on the command line) is refused by Hydra before anything runs. The
group options (``denoiser``, ``guide`` ...) are ``_target_`` nodes; ``build`` checks their keys
against the target's signature and names the group, the option and the bad key on error.

Shared objects are handed to targets by parameter name when the config leaves them unset:
``hmm`` (the one oracle instance), ``ar`` (the guide's AR model), ``tokenizer`` (the
denoiser's) and ``eos_id`` (its end-of-sequence id). That is how one HMM backs the denoiser,
the AR model and the judge of the oracle experiment, and why no config holds a token id.
"""

from __future__ import annotations

import difflib
import inspect
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.errors import CompactHydraException, InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import MISSING, DictConfig, OmegaConf

from decoding.cache import CACHE_MODES
from experiments.genppl import CONVENTIONS
from experiments.mauve_score import FEATURES, INSTALL
from experiments.paths import REPO_ROOT

SPECIAL_KEYS = {"_target_", "_partial_", "_args_", "_recursive_", "_convert_"}
# Model weights' precision (null: as loaded, float32); sampling stays float64 whatever it is.
DTYPES = (None, "float32", "bfloat16", "float16")
# Keys that may change between a run and its resumption without changing its samples.
NON_IDENTITY_KEYS = ("steps", "logger", "progress", "device", "threads", "mauve", "name",
                     "mauve_features")


class ConfigError(ValueError, CompactHydraException):
    """A config value or key that cannot work; raised before any model is loaded.

    Hydra prints it as one line (a traceback only with ``HYDRA_FULL_ERROR=1``)."""


TASKS = ("generate", "lm_eval")


@dataclass
class LmEvalConfig:
    """``task=lm_eval``: tasks of lm-evaluation-harness scored with the run's sampler
    (``experiments.lm_eval_run``; the model is ``experiments.lm_eval_model.DuetLM``, whose
    arguments these keys pass on). Unused by ``task=generate``."""

    tasks: list[str] = field(default_factory=list)
    include_path: str | None = None        # a folder of task YAMLs of one's own
    include_defaults: bool = True          # lm-eval's own tasks (indexing them takes ~20 s)
    num_fewshot: int | None = None
    limit: float | None = None             # documents per task (a fraction if < 1)
    metric: str | None = None              # the frontier's y: task/metric[/filter]
    loglikelihood: str = "elbo"            # elbo | ar | none (sampler-only)
    mc_samples: int = 128
    mc_batch_size: int = 32
    elbo_scheme: str = "count"             # count (LLaDA) | time
    stratified: bool = False
    greedy_check: bool = False
    max_gen_toks: int | None = None        # overrides every task's
    padding: str = "none"                  # none | canvas
    add_bos_token: bool = False
    apply_chat_template: Any = False       # true, or a template name
    fewshot_as_multiturn: bool | None = None
    system_instruction: str | None = None
    gen_kwargs: Any = None                 # a dict merged into every task's
    bootstrap_iters: int = 1000
    confirm_run_unsafe_code: bool = False  # code tasks (HumanEval, MBPP) execute the output


@dataclass
class RunConfig:
    """Top-level keys of ``experiments.run`` (the groups are ``_target_`` nodes)."""

    denoiser: Any = MISSING
    ar: Any = None
    judge: Any = MISSING
    strategy: Any = MISSING
    guide: Any = MISSING
    schedule: Any = MISSING
    data: Any = MISSING
    corpus: Any = None
    oracle: Any = None
    logger: Any = MISSING
    name: str = "tiny"
    steps: list[int] = field(default_factory=lambda: [2, 4, 8, 16, 32, 64, 128])
    num_samples: int = 32
    batch_size: int = 16
    length: int = 128
    seed: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    reference_samples: int = 64
    mauve: bool = False
    mauve_features: str = "last"
    gen_ppl_convention: str = "bos"
    device: str = "cpu"
    dtype: str | None = None
    threads: int | None = None
    progress: bool = False
    baselines: list[str] = field(default_factory=list)  # "ar", "judge": each model alone
    cache: str = "none"  # denoiser KV cache: none | prefix | dual (decoding.cache)
    cache_refresh_every: int | None = None  # also rebuild it after this many calls
    task: str = "generate"  # generate (samples, gen PPL) | lm_eval (lm-evaluation-harness)
    lm_eval: LmEvalConfig = field(default_factory=LmEvalConfig)


ConfigStore.instance().store(name="run_schema", node=RunConfig)


def _device(name: str) -> str:
    """``auto``: CUDA when present. Under torchrun each rank takes its own GPU."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        name = f"cuda:{os.environ['LOCAL_RANK']}"
    return name


def _path(rel: str) -> str:
    """A path relative to the repository when it exists there (runs work from any folder)."""
    candidate = REPO_ROOT / rel
    return str(candidate) if not Path(rel).is_absolute() and candidate.exists() else rel


def _dirname(override_dirname: str) -> str:
    """The run folder's name: flat even when an override's value is a path (``/`` -> ``%2F``)."""
    return (override_dirname or "default").replace("%", "%25").replace("/", "%2F")


for _name, _fn in (("duet.device", _device), ("duet.path", _path), ("duet.dirname", _dirname)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def validate(cfg: DictConfig) -> None:
    """Check the top-level keys and values (cheap; before any model is built)."""
    known = {f.name for f in fields(RunConfig)} | {"hydra"}
    unknown = [k for k in cfg.keys() if k not in known]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown top-level key {unknown[0]!r}{hint}; accepted keys: "
                          f"{', '.join(sorted(known - {'hydra'}))}")
    steps = cfg.steps
    if steps is None or len(steps) == 0:
        raise ConfigError("steps must be a non-empty list of positive integers, e.g. [2, 4, 8]")
    for s in steps:
        _positive_int("every entry of steps", s)
    if len(set(steps)) != len(steps):
        raise ConfigError(f"steps has repeated entries: {list(steps)}")
    for key in ("num_samples", "batch_size", "length"):
        _positive_int(key, cfg[key])
    if cfg.reference_samples < 0:
        raise ConfigError(f"reference_samples must be >= 0, got {cfg.reference_samples}")
    if not cfg.temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {cfg.temperature} (greedy decoding, "
                          "the temperature-0 limit: guide=greedy)")
    if not 0 < cfg.top_p <= 1:
        raise ConfigError(f"top_p must lie in (0, 1], got {cfg.top_p}")
    if cfg.threads is not None:
        _positive_int("threads", cfg.threads)
    if cfg.gen_ppl_convention not in CONVENTIONS:
        raise ConfigError(f"unknown gen_ppl_convention {cfg.gen_ppl_convention!r}; choose one "
                          f"of {', '.join(CONVENTIONS)}")
    if cfg.mauve_features not in FEATURES:
        raise ConfigError(f"mauve_features must be one of {FEATURES}, got {cfg.mauve_features!r}")
    if cfg.get("dtype") not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(map(str, DTYPES))}, "
                          f"got {cfg.dtype!r}")
    if cfg.mauve:
        require_mauve()
    if cfg.get("cache", "none") not in CACHE_MODES:
        raise ConfigError(f"cache must be one of {', '.join(CACHE_MODES)}, got {cfg.cache!r}")
    if cfg.get("cache_refresh_every") is not None:
        _positive_int("cache_refresh_every", cfg.cache_refresh_every)
    target = (cfg.get("strategy") or {}).get("_target_") if cfg.get("cache", "none") != "none" \
        else None
    if target and not getattr(get_object(target), "windowed", False):
        raise ConfigError(f"cache={cfg.cache} needs a strategy that commits inside one block at "
                          f"a time (strategy=blocks); {target.rsplit('.', 1)[-1]} commits "
                          "anywhere in the sequence")
    if cfg.get("task", "generate") not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {cfg.task!r}")


def require_mauve() -> None:
    try:
        import mauve  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"mauve=true: {INSTALL}") from err


def identity(cfg: DictConfig) -> dict:
    """The part of a resolved config that fixes a run's samples (compared on resume)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for key in NON_IDENTITY_KEYS:
        data.pop(key, None)
    if data.get("task", "generate") == "generate":  # as before these keys existed
        data.pop("task", None)
        data.pop("lm_eval", None)
    if data.get("cache", "none") == "none":  # the uncached samples, as before the keys
        data.pop("cache", None)
        data.pop("cache_refresh_every", None)
    return _drop_devices(data)


def _drop_devices(node: Any) -> Any:
    """Where a model runs does not change what a seed draws (up to float rounding)."""
    if isinstance(node, dict):
        return {k: _drop_devices(v) for k, v in node.items() if k != "device"}
    if isinstance(node, list):
        return [_drop_devices(v) for v in node]
    return node


def _where(group: str, choices: dict | None) -> str:
    option = (choices or {}).get(group)
    return f"{group}={option}" if option else group


def _signature(target: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):
        return None


def _check_node(node: DictConfig, where: str, inject: dict) -> list[str]:
    """Refuse unknown and missing keys of one ``_target_`` node (and its nested nodes);
    returns the injectable names the target takes and the config leaves unset."""
    path = node["_target_"]
    try:
        target = get_object(path)
    except Exception as err:
        raise ConfigError(f"{where}: cannot import _target_ {path!r} ({err})") from err
    sig = _signature(target)
    if sig is None:
        return []
    params = {n: p for n, p in sig.parameters.items() if n not in ("self", "cls")}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return []
    keys = [k for k in node.keys() if k not in SPECIAL_KEYS]
    for key in keys:
        if key not in params:
            close = difflib.get_close_matches(key, list(params), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r} for {path}{hint}; accepted keys: "
                              f"{', '.join(params)}")
        value = node._get_node(key)
        if isinstance(value, DictConfig) and "_target_" in value:
            _check_node(value, f"{where}.{key}", inject)
    wanted = [n for n in params if n in inject and (n not in node or node[n] is None)]
    if node.get("_partial_", False):
        return wanted
    for n, p in params.items():
        required = p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        if required and n not in node and n not in inject:
            raise ConfigError(f"{where}: missing required key {n!r} for {path}")
    return wanted


INJECTED = ("hmm", "ar", "tokenizer", "eos_id")


def check_keys(cfg: DictConfig, groups, choices: dict | None = None) -> None:
    """Refuse unknown or missing keys of every group's node, importing targets only."""
    for group in groups:
        node = cfg.get(group)
        if isinstance(node, DictConfig) and "_target_" in node:
            _check_node(node, _where(group, choices), dict.fromkeys(INJECTED))


def wanted_injections(node: DictConfig) -> list[str]:
    """The shared objects (``INJECTED``) a node's target takes, without building it."""
    return _check_node(node, "node", dict.fromkeys(INJECTED))


def build(node: DictConfig | None, group: str, choices: dict | None = None, **inject: Any) -> Any:
    """Instantiate one group's node, handing over the shared objects its target asks for.

    ``inject`` maps parameter names to objects, or to zero-argument callables returning them
    (so an AR model is only loaded when a guide actually takes one). Raises ``ConfigError``
    naming the group and option for unknown/missing keys, bad values, or a needed shared
    object that is absent.
    """
    if node is None:
        return None
    where = _where(group, choices)
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(f"{where}: expected a node with a _target_, got {node!r}")
    kwargs = {}
    for name in _check_node(node, where, inject):
        value = inject[name]() if callable(inject[name]) else inject[name]
        if value is None and name in ("hmm", "ar"):
            need = "an oracle (oracle=random, or experiment=hmm_oracle)" if name == "hmm" \
                else "an AR model (ar=tiny, ar=gpt2, ...)"
            raise ConfigError(f"{where} needs {need}, but none is configured")
        kwargs[name] = value
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err
        raise ConfigError(f"{where}: {type(cause).__name__}: {cause}") from err
