"""The installed commands; each is one entry point's ``cli``.

    duet-run [group=option ...] [key=value ...]      # python -m experiments.run
    duet-evaluate run_dir=<dir> judge=<option>       # python -m experiments.evaluate
    duet-train model=<option>                        # python -m experiments.train
    duet-lm-eval --model duet --tasks ...            # python -m experiments.lm_eval_model
    duet-run --help                                  # the groups, their options and every key

Where the configs live is ``experiments.paths``; configs of one's own are added with Hydra's
``--config-dir`` (see docs/experiments.md). That the Duet packages are not shadowed by others of
the same name is checked when ``experiments`` is imported.
"""

from __future__ import annotations


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
    from experiments.train import cli

    cli()


def lm_eval() -> None:
    """``duet-lm-eval``: lm-evaluation-harness's command line with the ``duet`` model."""
    import sys

    try:
        from experiments.lm_eval_model import main
    except ImportError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    main()
