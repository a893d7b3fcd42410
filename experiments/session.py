"""Builds a run's objects from its config, each once, in the order that fails cheapest.

Config values are checked first, then the strategy against every step count; models load
only when something needs them (the AR model only for a guide that takes one, the judge only
on the rank that evaluates, the oracle only for an ``hmm`` option).
"""

from __future__ import annotations

import json
import warnings
from functools import cached_property
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from decoding import Coordinator
from experiments.config import ConfigError, build, check_keys, validate, wanted_injections
from experiments.metrics import Evaluator
from models.families import checkpoint_tokenizer
from models.pairing import pair_models
from models.tokenizer_check import tokenizer_differences

GROUPS = ("denoiser", "ar", "judge", "strategy", "guide", "schedule", "data", "corpus", "oracle",
          "logger")


def _config_json(name_or_path: str) -> dict | None:
    """A checkpoint's config.json from a local folder or the local hub cache (no download)."""
    path = Path(name_or_path).expanduser() / "config.json"
    if not path.exists():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(str(name_or_path), "config.json")
        except Exception:  # not a hub id
            return None
        if not isinstance(cached, str):
            return None
        path = Path(cached)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def declared_max_length(cfg: DictConfig) -> int | None:
    """The denoiser's longest sequence as its config states it, read before any weights load:
    the oracle's length, or config.json's ``ddit.max_length`` (duet), ``model_length``
    (MDLM), ``model.length`` (SEDD), ``n_positions``/``max_position_embeddings``."""
    node = cfg.get("denoiser")
    if not isinstance(node, DictConfig):
        return None
    target = str(node.get("_target_", ""))
    if target.endswith("HMMDenoiser"):
        oracle = cfg.get("oracle")
        length = oracle.get("length") if isinstance(oracle, DictConfig) else None
        return int(length) if isinstance(length, int) else None
    if "name_or_path" not in node:
        return None
    conf = _config_json(str(node.name_or_path))
    if conf is None:
        return None
    conf = conf.get("config", conf)  # some SEDD uploads nest the run config
    for value in (conf.get("ddit", {}).get("max_length"), conf.get("model_length"),
                  (conf.get("model") or {}).get("length") if isinstance(conf.get("model"),
                                                                       dict) else None,
                  conf.get("n_positions"), conf.get("max_position_embeddings")):
        if isinstance(value, int) and value > 0:
            return value
    return None


class Session:
    """Lazily built objects of one run.

    Args:
        cfg: the composed ``run`` config.
        choices: group -> option names (Hydra's runtime choices), used in error messages.
    """

    def __init__(self, cfg: DictConfig, choices: dict | None = None):
        validate(cfg)
        self.cfg, self.choices = cfg, dict(choices or {})
        check_keys(cfg, GROUPS, self.choices)
        _ = self.schedule  # built now so that a bad value fails before any model loads
        self._precheck_pair()
        if cfg.get("task", "generate") == "lm_eval":  # lengths come with the requests
            from experiments.lm_eval_check import require_lm_eval

            require_lm_eval()
            return
        declared = declared_max_length(cfg)
        if declared is not None and cfg.length > declared:
            raise ConfigError(f"length {cfg.length} exceeds the maximum {declared} of "
                              f"denoiser={self.name_of('denoiser')} (from its config)")
        if not self._strategy_wants_eos():
            self.check_steps()

    def name_of(self, group: str) -> str:
        """The option chosen for ``group`` (else the target's class name)."""
        if self.choices.get(group):
            return str(self.choices[group])
        node = self.cfg.get(group)
        target = node.get("_target_", "") if isinstance(node, DictConfig) else ""
        return target.rsplit(".", 1)[-1] if target else "none"

    def build(self, group: str, **inject):
        """Instantiate ``group``'s node with the given shared objects (see ``config.build``)."""
        return build(self.cfg.get(group), group, self.choices, **inject)

    def _strategy_wants_eos(self) -> bool:
        node = self.cfg.strategy
        return "eos_id" in node and node.eos_id is None

    @cached_property
    def oracle(self):
        return self.build("oracle")

    @cached_property
    def denoiser(self):
        model = self.build("denoiser", hmm=lambda: self.oracle)
        max_len = getattr(model, "max_length", None)
        if max_len is not None and self.cfg.length > max_len:
            raise ConfigError(f"length {self.cfg.length} exceeds the denoiser's maximum {max_len}")
        return model

    @property
    def tokenizer(self):
        return getattr(self.denoiser, "tokenizer", None)

    @property
    def eos_id(self) -> int | None:
        tok = self.tokenizer
        return None if tok is None else tok.eos_token_id

    @property
    def mask_id(self) -> int:
        return int(self.denoiser.mask_id)

    def _precheck_pair(self) -> None:
        """Before any weights load: a guide that takes an AR model has one, and the two
        checkpoints' tokenizers (read from their folders or the hub cache) agree."""
        guide, dnode, anode = (self.cfg.get(g) for g in ("guide", "denoiser", "ar"))
        if not isinstance(guide, DictConfig) or "ar" not in wanted_injections(guide):
            return
        if anode is None:
            raise ConfigError(
                f"guide={self.name_of('guide')} needs an AR model that shares the tokenizer of "
                f"denoiser={self.name_of('denoiser')}, but ar=none: name one with ar=<option> "
                "(docs/families.md lists each family's natural guide), or use guide=none")
        paths = [n.get("name_or_path") if isinstance(n, DictConfig) else None
                 for n in (dnode, anode)]
        if None in paths:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            toks = [checkpoint_tokenizer(str(p)) for p in paths]
        if None in toks:
            return  # checked again on the loaded models
        diffs = tokenizer_differences(*toks)
        if diffs:
            raise ConfigError(f"ar={self.name_of('ar')} with denoiser="
                              f"{self.name_of('denoiser')}: the tokenizers disagree: "
                              + "; ".join(diffs))

    @cached_property
    def ar(self):
        model = self.build("ar", hmm=lambda: self.oracle)
        if model is not None:
            model = self._pair(model)
        return model

    def _pair(self, ar):
        """Check that the AR model speaks the denoiser's token ids and put both on the ids they
        share (``models.pairing.pair_models``); the session's denoiser becomes the paired one."""
        untokenized = all(getattr(m, "tokenizer", None) is None for m in (self.denoiser, ar))
        try:
            with warnings.catch_warnings():
                if untokenized:  # the HMM oracle: no text to probe, only ids and sizes
                    warnings.simplefilter("ignore")
                denoiser, ar = pair_models(self.denoiser, ar)
        except ValueError as err:
            raise ConfigError(f"ar={self.name_of('ar')} with denoiser="
                              f"{self.name_of('denoiser')}: {err}") from err
        self.__dict__["denoiser"] = denoiser
        return ar

    @cached_property
    def schedule(self):
        return self.build("schedule")

    @cached_property
    def strategy(self):
        return self.build("strategy", eos_id=lambda: self.eos_id)

    def check_steps(self) -> None:
        for steps in self.cfg.steps:
            try:
                self.strategy.check(int(steps), int(self.cfg.length))
                self.strategy.times(self.schedule, int(steps))
            except ValueError as err:
                raise ConfigError(f"steps={steps} with strategy={self.name_of('strategy')}: "
                                  f"{err}") from err

    @cached_property
    def guide(self):
        return self.build("guide", ar=lambda: self.ar)

    @cached_property
    def coordinator(self) -> Coordinator:
        self.check_steps()
        guide = self.guide  # first: pairing with its AR model may restrict the denoiser's ids
        parts = (self.denoiser, self.strategy, guide, self.schedule)
        try:
            return Coordinator(*parts, temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                               cache=str(self.cfg.get("cache", "none")),
                               refresh_every=self.cfg.get("cache_refresh_every"))
        except ValueError as err:
            raise ConfigError(f"strategy={self.name_of('strategy')}, guide="
                              f"{self.name_of('guide')} with denoiser="
                              f"{self.name_of('denoiser')}: {err}") from err

    @cached_property
    def task(self):
        return self.build("data", tokenizer=lambda: self.tokenizer)

    @cached_property
    def corpus(self):
        return self.build("corpus", hmm=lambda: self.oracle, tokenizer=lambda: self.tokenizer)

    @cached_property
    def held_out(self):
        """(W, L) held-out sequences for prompts, the reference row and MAUVE (or None)."""
        cfg = self.cfg
        want = max(cfg.reference_samples, cfg.num_samples if (self.task.needs_corpus
                                                              or cfg.mauve) else 0)
        if want == 0 or self.corpus is None:
            return None
        return self.corpus.sequences(want, int(cfg.length))

    @cached_property
    def prompts(self):
        """(N, L) long prompt rows (mask id where generated), or None."""
        try:
            return self.task.prompts(self.held_out, int(self.cfg.num_samples),
                                     int(self.cfg.length), self.mask_id)
        except ValueError as err:
            raise ConfigError(f"data={self.name_of('data')}: {err}") from err

    @cached_property
    def judge(self):
        return self.build("judge", hmm=lambda: self.oracle)

    @cached_property
    def evaluator(self) -> Evaluator:
        ref = self.held_out if self.cfg.mauve else None
        if self.cfg.mauve and ref is None:
            raise ConfigError("mauve=true needs held-out text: set a corpus")
        return Evaluator(self.judge, self.tokenizer, self.eos_id, mauve_reference=ref,
                         convention=str(self.cfg.gen_ppl_convention),
                         mauve_features=str(self.cfg.mauve_features))

    def load(self) -> None:
        """Build every model and the prompts now, so a bad one fails before generating."""
        _ = self.coordinator, self.prompts

    def labels(self) -> dict:
        """Names that identify the run in metrics lines and plots."""
        out = {g: self.name_of(g) for g in ("guide", "strategy", "denoiser", "ar", "judge",
                                             "data", "schedule")}
        out["name"] = self.cfg.name
        return out

    def resolved(self) -> dict:
        return OmegaConf.to_container(self.cfg, resolve=True)
