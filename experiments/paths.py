"""Where the configs live, in a checkout and when installed; imports nothing of Duet.

The configs are the repository's ``conf/``. A wheel carries them as ``experiments/conf`` (the
packaging maps ``conf/`` there), so the commands run from any working directory. Every entry
point reads ``CONF_DIR`` from here, so the commands depend on the entry points and never the
reverse.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
REPO_ROOT = _HERE.parent


def conf_dir() -> Path:
    """The config directory: ``experiments/conf`` in an installed wheel, else ``<repo>/conf``."""
    for candidate in (_HERE / "conf", REPO_ROOT / "conf"):
        if (candidate / "run.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"Duet's configs are missing: neither {_HERE / 'conf'} nor "
                            f"{REPO_ROOT / 'conf'} holds run.yaml; reinstall the package")


CONF_DIR = str(conf_dir())
