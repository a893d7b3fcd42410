"""A launcher plugin that the composed config selects must be installed.

``check_launchers`` (called by ``experiments.cli.run_cli`` before Hydra starts) stops with
``pip install "duet-dlm[launchers]"`` where Hydra alone would only say that
``hydra/launcher/joblib`` is missing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from experiments.paths import CONF_DIR

LAUNCHERS = {  # hydra/launcher option -> (plugin module, distribution)
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    "submitit": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
}


def _overrides(argv: list[str]) -> list[str]:
    """The ``key=value`` overrides of a command line, and ``--config-dir`` as a search path."""
    out, dirs, flag = [], [], None
    for arg in argv:
        if flag is not None:
            if flag in ("-cd", "--config-dir"):
                dirs.append(Path(arg).expanduser().resolve().as_uri())
            flag = None
        elif arg in ("-cd", "--config-dir", "-cp", "--config-path", "-cn", "--config-name",
                     "-c", "--cfg", "-p", "--package", "--experimental-rerun"):
            flag = arg  # a flag whose value follows
        elif arg.startswith("--config-dir="):
            dirs.append(Path(arg.split("=", 1)[1]).expanduser().resolve().as_uri())
        elif not arg.startswith("-") and "=" in arg:
            out.append(arg)
    return out + ([f"hydra.searchpath=[{','.join(dirs)}]"] if dirs else [])


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def check_launchers(config_name: str, argv: list[str]) -> None:
    """Fail clearly when the composed config picks a launcher whose plugin is not installed."""
    missing = {k: v for k, v in LAUNCHERS.items() if not _installed(v[0])}
    if not missing:
        return
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(_overrides(argv))
        plain = [o.input_line for o in parsed if not o.is_sweep_override()]
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            compose(config_name, overrides=plain, return_hydra_config=True)
    except Exception as err:  # anything else Hydra reports itself, in its own words
        text = str(err)
        for option, (_, dist) in missing.items():
            if f"hydra/launcher/{option}" in text:
                raise SystemExit(
                    f"error: this config runs its jobs with the {option} launcher, which needs "
                    f"{dist}: pip install \"duet-dlm[launchers]\" (or pick "
                    "hydra/launcher=basic to run the jobs one after another)") from None
