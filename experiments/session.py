"""Builds a run's objects from its config, each once, in the order that fails cheapest.

Config values are checked first, then the strategy against every step count; models load
only when something needs them (the AR model only for a guide that takes one, the judge only
on the rank that evaluates, the oracle only for an ``hmm`` option).
"""

from __future__ import annotations

from functools import cached_property

from omegaconf import DictConfig, OmegaConf

from decoding import Coordinator
from experiments.config import ConfigError, build, check_keys, validate
from experiments.metrics import Evaluator

GROUPS = ("denoiser", "ar", "judge", "strategy", "guide", "schedule", "data", "corpus", "oracle",
          "logger")


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

    @cached_property
    def ar(self):
        return self.build("ar", hmm=lambda: self.oracle)

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
            except ValueError as err:
                raise ConfigError(f"steps={steps} with strategy={self.name_of('strategy')}: "
                                  f"{err}") from err

    @cached_property
    def guide(self):
        return self.build("guide", ar=lambda: self.ar)

    @cached_property
    def coordinator(self) -> Coordinator:
        self.check_steps()
        parts = (self.denoiser, self.strategy, self.guide, self.schedule)
        try:
            return Coordinator(*parts, temperature=self.cfg.temperature, top_p=self.cfg.top_p)
        except ValueError as err:
            raise ConfigError(f"guide={self.name_of('guide')} with denoiser="
                              f"{self.name_of('denoiser')}: {err}") from err

    @cached_property
    def task(self):
        return self.build("data")

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
