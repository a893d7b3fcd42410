"""What every command-line entry point does around Hydra.

Before Hydra parses the command line (``run_cli``):

* ``experiments.launchers.check_launchers``: a launcher plugin the config needs is installed.
* ``check_overrides``: a key that no config or constructor has (``strategy.mdoe=exact``,
  with or without ``+``) is answered in one line with the closest valid key and the accepted
  keys, exit status 2 (Hydra alone suggests ``+strategy.mdoe=exact``, the wrong fix). Set
  ``HYDRA_FULL_ERROR=1`` for tracebacks.
* ``quote_path_arg``: a path such as ``outputs/tiny/guide=dcd,num_samples=8`` (the project's
  own run-directory names) is taken verbatim, as ``run_dir=PATH`` or as a bare positional
  argument, and handed to Hydra quoted.
* Ctrl-C ends the command with a one-line note and status 130, no traceback.

After Hydra composes the config and before it creates the run directory, the run's own checks
(``steps=[0]``, a length above the one the model's config declares) refuse it the same way, in
one line with status 2 (``experiments.callbacks.CheckFirst`` raises ``Refused``): a refused
run leaves no directory behind.

What runs inside each job (log prefixes, progress) is ``experiments.jobs``.
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import fields
from pathlib import Path

import experiments.help  # noqa: F401  (the duet.help resolver of the --help template)
from experiments.config import ConfigError, RunConfig, _signature
from experiments.launchers import check_launchers
from experiments.paths import CONF_DIR

CONF = Path(CONF_DIR)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


class Refused(SystemExit):
    """A ``ConfigError`` raised from a Hydra callback, which would turn an ``Exception`` into
    a warning. ``run_cli`` reports ``error`` as it reports any ConfigError; elsewhere it ends
    the process with the message (status 1)."""

    def __init__(self, error: ConfigError):
        super().__init__(f"error: {_one_line(error)}")
        self.error = error


def run_cli(main, config_name: str, argv: list[str] | None = None,
            path_key: str | None = None) -> None:
    """Check ``argv`` (default ``sys.argv[1:]``), then call the Hydra ``main`` on it."""
    args = list(sys.argv[1:] if argv is None else argv)
    full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    try:
        if path_key is not None:
            args = quote_path_arg(args, path_key)
        if config_name == "run":
            check_overrides(args)
        check_launchers(config_name, args)
        sys.argv = [sys.argv[0], *args]
        main()
    except (ConfigError, Refused) as caught:
        err = caught.error if isinstance(caught, Refused) else caught
        if full:
            raise err from None  # its own traceback: where the check refused it
        print(f"error: {_one_line(err)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        _stop_workers()
        if full:
            raise
        print("\ninterrupted: rerun the same command to resume (finished batches are kept)",
              file=sys.stderr)
        sys.exit(130)


def _stop_workers() -> None:
    """Shut down joblib's worker pool, if a sweep started one: its queues' semaphores are
    released instead of being reported as leaked at exit."""
    module = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(module, "_executor", None) if module else None
    if executor is not None:
        try:
            executor.shutdown(wait=True, kill_workers=True)
        except Exception:  # already broken by the interrupt: nothing left to release
            pass


def quote_path_arg(args: list[str], key: str) -> list[str]:
    """Turn ``key=PATH`` or a bare positional ``PATH`` into ``key='PATH'`` for Hydra."""
    out, seen, flag_value = [], False, False
    for arg in args:
        value = None
        if arg.startswith(f"{key}="):
            value = arg[len(key) + 1:]
        elif not seen and not flag_value and not arg.startswith("-") and _looks_like_path(arg):
            value = arg
        flag_value = arg in _FLAGS_WITH_VALUE
        if value is None:
            out.append(arg)
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]  # already quoted for Hydra
        seen = True
        out.append(f"{key}='" + value.replace("\\", "\\\\").replace("'", "\\'") + "'")
    return out


# Hydra's flags whose value is the next argument (not a path to take).
_FLAGS_WITH_VALUE = {"-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir",
                     "--experimental-rerun", "-p", "--package", "-c", "--cfg"}


def _looks_like_path(arg: str) -> bool:
    """An existing path, a word without ``=``, or ``a/b=...`` where ``a/b`` is no config
    group (Hydra's group overrides are ``hydra/...`` or a folder of conf/)."""
    if Path(arg).exists() or "=" not in arg:
        return True
    key = arg.split("=", 1)[0].lstrip("+~")
    return "/" in key and not key.startswith("hydra/") and not (CONF / key).is_dir()


def _parse(args: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    plain = [a for i, a in enumerate(args) if not a.startswith("-")
             and not (i > 0 and args[i - 1] in _FLAGS_WITH_VALUE)]
    try:
        return OverridesParser.create().parse_overrides(plain)
    except Exception:  # a grammar error: Hydra reports it in its own words
        return []


def _is_group(key: str) -> bool:
    return "/" in key or (CONF / key).is_dir()


def check_overrides(args: list[str]) -> None:
    """Refuse unknown keys among ``experiments.run`` overrides (see the module docstring)."""
    if any(a in ("-cd", "--config-dir", "-cn", "--config-name", "-cp", "--config-path")
           or a.startswith(("--config-dir=", "--config-name=", "--config-path=")) for a in args):
        return  # configs of one's own: Hydra's checks and the run's own key checks apply
    overrides = [o for o in _parse(args) if not o.is_delete()
                 and not o.key_or_group.startswith("hydra") and o.package is None]
    for o in overrides:
        if _is_group(o.key_or_group) and (CONF / o.key_or_group).is_dir():
            _check_options(o)
    keys = [o for o in overrides if not _is_group(o.key_or_group)]
    if not keys:
        return
    top = sorted(f.name for f in fields(RunConfig))
    for o in keys:
        head = o.key_or_group.split(".")[0]
        if head not in top:
            raise ConfigError(_unknown("top-level key", head, top))
    nested = [o for o in keys if "." in o.key_or_group]
    if not nested:
        return
    cfg, choices = _compose([o for o in overrides if _is_group(o.key_or_group)])
    for o in nested:
        _check_path(cfg, o.key_or_group.split("."), choices, o.is_add() or o.is_force_add())


def _check_options(o) -> None:
    folder = CONF / o.key_or_group
    names = sorted(p.stem for p in folder.glob("*.yaml"))
    values = list(o.sweep_string_iterator()) if o.is_sweep_override() \
        else [o.get_value_element_as_str()]
    for value in values:
        if value != "null" and value not in names:
            close = difflib.get_close_matches(value, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown option {o.key_or_group}={value}{hint}; options: "
                              f"{', '.join(names)}")


def _unknown(what: str, key: str, valid: list[str], owner: str = "") -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    owner = f" for {owner}" if owner else ""
    return f"unknown {what} {key!r}{owner}{hint}; accepted keys: {', '.join(valid)}"


def _compose(groups):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    chosen = []
    for o in groups:
        value = next(o.sweep_string_iterator()) if o.is_sweep_override() \
            else o.get_value_element_as_str()
        prefix = "+" if o.is_add() else "++" if o.is_force_add() else ""
        chosen.append(f"{prefix}{o.key_or_group}={value}")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("run", overrides=chosen, return_hydra_config=True)
    except Exception:  # a bad option name: Hydra lists the available ones itself
        return None, {}
    finally:
        GlobalHydra.instance().clear()
    return cfg, dict(cfg.hydra.runtime.choices)


def _check_path(cfg, parts: list[str], choices: dict, adding: bool) -> None:
    from hydra.utils import get_object
    from omegaconf import DictConfig

    if cfg is None:
        return
    node, where = cfg, []
    for i, part in enumerate(parts):
        if not isinstance(node, DictConfig):
            return  # a value, not a node: Hydra's own type checks apply
        group = parts[0]
        label = f"{group}={choices[group]}" if choices.get(group) else ".".join(where) or group
        if i > 0 and "_target_" in node:
            try:
                sig = _signature(get_object(node["_target_"]))
            except Exception:
                return  # an unimportable target is reported when the run builds it
            if sig is None or any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
                return
            params = [n for n in sig.parameters if n not in ("self", "cls")]
            if part not in params:
                raise ConfigError(f"{label}: " + _unknown("key", part, params,
                                                          str(node["_target_"])))
            if part not in node:
                return  # a constructor argument the option leaves at its default
        elif part not in node:
            if adding and i == len(parts) - 1:
                return
            raise ConfigError(f"{label}: " + _unknown("key", part, sorted(map(str, node))))
        node = node._get_node(part)
        where.append(part)

