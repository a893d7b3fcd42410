"""Whether lm-evaluation-harness is installed, checked before any model loads."""

from __future__ import annotations

from experiments.config import ConfigError

INSTALL = 'task=lm_eval needs lm-evaluation-harness: pip install "duet-dlm[eval]"'


def require_lm_eval() -> None:
    try:
        import lm_eval.api.model  # noqa: F401
    except ImportError as err:
        raise ConfigError(INSTALL) from err
