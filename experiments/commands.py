"""The installed commands, and where their configs live in a checkout and when installed.

    duet-run [group=option ...] [key=value ...]      # python -m experiments.run
    duet-evaluate run_dir=<dir> judge=<option>       # python -m experiments.evaluate
    duet-train model=<option>                        # python -m experiments.train
    duet-run --help                                  # the groups, their options and every key

The configs are the repository's ``conf/``. A wheel carries them as ``experiments/conf`` (the
packaging maps ``conf/`` there) and the embedded models as ``models/tiny``, so the commands run
from any working directory and write their outputs there. Configs of one's own are added with
Hydra's ``--config-dir`` (see docs/experiments.md).

``check_launchers`` (called by ``experiments.cli.run_cli`` before Hydra starts): a launcher
plugin that the composed config selects must be installed, else the command stops with
``pip install "duet-dlm[launchers]"`` (Hydra alone would only say that
``hydra/launcher/joblib`` is missing). That the Duet packages are not shadowed by others of the
same name is checked when ``experiments`` is imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_HERE = Path(__file__).resolve().parent
REPO_ROOT = _HERE.parent
LAUNCHERS = {  # hydra/launcher option -> (plugin module, distribution)
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    "submitit": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
}


def conf_dir() -> Path:
    """The config directory: ``experiments/conf`` in an installed wheel, else ``<repo>/conf``."""
    for candidate in (_HERE / "conf", REPO_ROOT / "conf"):
        if (candidate / "run.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"Duet's configs are missing: neither {_HERE / 'conf'} nor "
                            f"{REPO_ROOT / 'conf'} holds run.yaml; reinstall the package")


CONF_DIR = str(conf_dir())


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


def run() -> None:
    """``duet-run``: generate and evaluate over a list of step counts."""
    from experiments.run import cli

    cli()


def evaluate() -> None:
    """``duet-evaluate``: re-score saved samples with another judge."""
    from experiments.evaluate import cli

    cli()


def train() -> None:
    """``duet-train``: train one of the tiny models."""
    from experiments.cli import run_cli
    from training.__main__ import main

    run_cli(main, "train")
