"""A Duet run config for lm-evaluation-harness requests: composed from overrides, checked
without loading a model, with models built on first use.

``compose_run_config`` turns Duet overrides (``guide=dcd strategy=left_to_right ...``, the
same words as ``python -m experiments.run``) into the composed ``run`` config, with the
command line's key checks. ``EvalSession`` is ``experiments.session.Session`` for requests
whose lengths are only known when they arrive: the run's ``length`` plays no part, the
strategy is checked against each canvas length and step count, and the denoiser's tokenizer
and maximum length are read from its folder before any weights load.
"""

from __future__ import annotations

import copy
from functools import cached_property

from omegaconf import DictConfig, OmegaConf, open_dict

from experiments.config import ConfigError
from experiments.paths import CONF_DIR
from experiments.session import Session, declared_max_length

# Top-level keys that shape how the sampler runs, recorded beside its choices.
SAMPLER_KEYS = ("temperature", "top_p", "device", "dtype", "cache", "cache_refresh_every")


def compose_run_config(overrides: list[str]) -> tuple[DictConfig, dict]:
    """(composed ``run`` config without its ``hydra`` node, group -> option chosen)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from experiments.cli import check_overrides

    check_overrides(list(overrides))
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("run", overrides=list(overrides), return_hydra_config=True)
    except Exception as err:  # a bad option or value: Hydra's own words, on one line
        raise ConfigError(" ".join(str(err).split())) from err
    finally:
        GlobalHydra.instance().clear()
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def override_words(args: dict) -> list[str]:
    """lm-eval's parsed ``--model_args`` (values already cast to bool/int/None) back into
    Hydra override words. lm-eval reads ``none`` as None: it is the option ``none`` here."""
    words = []
    for key, value in args.items():
        if value is None:
            value = "none"
        elif isinstance(value, bool):
            value = str(value).lower()
        words.append(f"{key}={value}")
    return words


class EvalSession(Session):
    """``Session`` whose lengths come with the requests.

    Args:
        cfg: the composed ``run`` config (its ``length`` and ``steps`` are not used).
        choices: group -> option names, for messages.
    """

    def __init__(self, cfg: DictConfig, choices: dict | None = None):
        cfg = copy.deepcopy(cfg)
        cfg.task = "lm_eval"  # Session: no fixed length or step list to check up front
        cfg.length = 1  # requests bring their own lengths (checked by check_canvas)
        super().__init__(cfg, choices)

    def check_steps(self) -> None:
        """Nothing to check without a length: ``check_canvas`` checks each request's."""

    @cached_property
    def text_tokenizer(self):
        """The denoiser's tokenizer, read from its folder (no weights), or None."""
        from models.hub import load_tokenizer

        node = self.cfg.get("denoiser")
        where = None
        if isinstance(node, DictConfig):
            where = node.get("tokenizer") if isinstance(node.get("tokenizer"), str) else None
            where = where or node.get("name_or_path")
        return None if where is None else load_tokenizer(str(where), warn=False)

    @property
    def loaded(self) -> bool:
        return "denoiser" in self.__dict__

    @property
    def tokenizer(self):
        if self.loaded:
            return getattr(self.denoiser, "tokenizer", None) or self.text_tokenizer
        return self.text_tokenizer

    def require_tokenizer(self):
        tok = self.tokenizer
        if tok is None:
            raise ConfigError(f"denoiser={self.name_of('denoiser')} has no tokenizer: "
                              "lm-eval tasks are text (the HMM oracle has token ids only)")
        return tok

    @property
    def max_length(self) -> int | None:
        """The denoiser's longest sequence: its own once loaded, else its config's."""
        if self.loaded:
            return getattr(self.denoiser, "max_length", None)
        return declared_max_length(self.cfg)

    @property
    def ar_configured(self) -> bool:
        node = self.cfg.get("ar")
        return isinstance(node, DictConfig) and "_target_" in node

    def check_canvas(self, steps: int, length: int) -> None:
        """Refuse a step count the strategy cannot run on ``length`` positions."""
        try:
            self.strategy.check(int(steps), int(length))
            self.strategy.times(self.schedule, int(steps))
        except ValueError as err:
            raise ConfigError(f"steps={steps} with strategy={self.name_of('strategy')} on a "
                              f"{length}-token canvas: {err}") from err

    def sampler_settings(self) -> dict:
        """The sampler's choices and constructor arguments, flat: ``strategy.<key>``, ..."""
        out = {g: self.name_of(g) for g in ("denoiser", "ar", "guide", "strategy", "schedule")}
        for group in ("strategy", "guide"):
            node = self.cfg.get(group)
            if isinstance(node, DictConfig):
                values = OmegaConf.to_container(node, resolve=True)
                for key, value in _flat(values):
                    if key != "_target_":
                        out[f"{group}.{key}"] = value
        for key in SAMPLER_KEYS:
            if key in self.cfg:
                out[key] = self.cfg[key]
        return out


def _flat(node, prefix: str = ""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value if not isinstance(value, list) else str(value)
