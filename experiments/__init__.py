"""Entry points (run, evaluate, plot, train) and what they share: the run schema and config
checks, tasks and corpora, metrics, the run-directory store, loggers and process groups.

Duet installs generic top-level names (``models``, ``experiments``, ...). Importing this package
checks that each of them comes from the same tree as this one, so a folder named ``models`` in
the working directory (first on the path under ``python -m``) or another distribution's package
fails here with a message instead of as a missing name somewhere later.
"""

from importlib.util import find_spec as _find_spec
from pathlib import Path as _Path

_ROOT = _Path(__file__).resolve().parent.parent
PACKAGES = ("decoding", "models", "copula", "edlm", "experiments", "training")


def check_packages() -> None:
    """Raise ImportError unless every Duet package of this tree is imported from it."""
    for name in PACKAGES:
        if not (_ROOT / name / "__init__.py").is_file():
            continue  # not part of this tree (an older checkout)
        spec = _find_spec(name)
        origin = getattr(spec, "origin", None)
        if origin in (None, "namespace") or _Path(origin).resolve().parent.parent != _ROOT:
            found = origin or list(getattr(spec, "submodule_search_locations", None) or [])
            raise ImportError(
                f"the package {name!r} is imported from {found}, not from Duet at {_ROOT}: "
                f"a folder or another package named {name!r} shadows it. Run the duet-* "
                "commands (they keep the working directory off the import path), run from "
                "another directory, or install Duet in a virtual environment of its own; an "
                "editable install made before the checkout gained this package needs "
                "`pip install --no-deps -e .` again.")


check_packages()
