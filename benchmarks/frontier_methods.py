"""The frontier's methods: a guide and a strategy option of ``conf/``, composed with Hydra
exactly as ``python -m experiments.run guide=<g> strategy=<s>`` composes them.

``METHODS`` is the measured list (the tables of docs/results.md); ``parse_method`` turns a
command-line ``<guide option>[K]/<strategy option>`` into one more, so a new option is
measured without an edit here.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from experiments.paths import CONF_DIR

# (guide option, K = guide.num_candidates or None, strategy option, largest step count in the
# default suite; None: every step count)
CAPS = [("none", None, "ancestral", None), ("none", None, "margin", 32),
        ("none", None, "remdm", 32),
        ("edlm", 2, "ancestral", 16), ("edlm", 4, "ancestral", 16), ("edlm", 8, "ancestral", 8),
        ("edlm", 2, "margin", 8), ("edlm", 4, "margin", 8), ("edlm", 8, "margin", 4),
        ("edlm", 2, "remdm", 8), ("edlm", 4, "remdm", 8), ("edlm", 8, "remdm", 4),
        ("dcd", None, "left_to_right", 16), ("dcd", None, "ancestral", 16),
        ("dcd", None, "chunked", 16), ("dcd", None, "margin", 8),
        ("dcd", None, "remdm", 8),
        ("dcd_is", 4, "ancestral", 8), ("dcd_is", 4, "margin", 4), ("dcd_is", 4, "remdm", 4),
        # Their conf defaults: γ = 4 (steps = drafting passes); R = 0.5, M = 8 (steps = most
        # rounds); N = 8 particles.
        ("speculative", None, "left_to_right", 2), ("apd", None, "left_to_right", 16),
        ("smc", None, "ancestral", 4)]


@dataclass
class Method:
    guide: str
    k: int | None
    strategy: str
    cap: int | None
    settings: tuple[str, ...] = ()  # guide.KEY=VALUE overrides of this method alone

    @property
    def label(self) -> str:
        keys = ",".join(s.removeprefix("guide.") for s in self.settings)
        return f"{self.guide}{self.k or ''}" + (f"[{keys}]" if keys else "")

    @property
    def name(self) -> str:
        return f"{self.label}/{self.strategy}"

    @property
    def overrides(self) -> list[str]:
        extra = [] if self.k is None else [f"guide.num_candidates={self.k}"]
        return [f"guide={self.guide}", f"strategy={self.strategy}", *extra, *self.settings]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def parse_method(spec: str) -> Method:
    """``<guide option>[K]/<strategy option>[:guide.KEY=VALUE,...]``, e.g. ``edlm16/margin``,
    ``smc/ancestral`` or ``dcd/left_to_right:guide.context=full``."""
    spec, _, extra = spec.partition(":")
    settings = tuple(s for s in extra.split(",") if s)
    for s in settings:
        if not s.startswith("guide.") or "=" not in s:
            raise SystemExit(f"--method {spec}:{extra}: settings are guide.KEY=VALUE, got {s!r}")
    guide, _, strategy = spec.partition("/")
    k = None
    if guide not in options("guide") and (m := re.fullmatch(r"(.+?)(\d+)", guide)):
        guide, k = m[1], int(m[2])
    for group, name in (("guide", guide), ("strategy", strategy)):
        if name not in options(group):
            raise SystemExit(f"--method {spec}: no {group} option {name!r} in {CONF_DIR}; "
                             f"options: {', '.join(options(group))}")
    return Method(guide, k, strategy, None, settings)


def compose_run(overrides: list[str]) -> DictConfig:
    """The ``run`` config that ``python -m experiments.run <overrides>`` would compose."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("run", overrides=overrides)


METHODS = [Method(*spec) for spec in CAPS]


def parse_steps(text: str | None) -> list[int] | None:
    """``--steps 2,4,8`` -> sorted step counts (None: the suite's default)."""
    return None if not text else sorted({int(s) for s in text.split(",")})


def parse_temperatures(text: str | None) -> list[float] | None:
    """``--temperatures 0.9,1`` -> sorted temperatures (None: the run's own)."""
    if not text:
        return None
    values = sorted({float(t) for t in text.split(",")})
    if values[0] <= 0:
        raise argparse.ArgumentTypeError(f"temperatures must be > 0, got {text!r}")
    return values
