"""Train one tiny model: ``python -m experiments.train model=ar_tiny`` (same as
``python -m training model=ar_tiny``; the code lives in the :mod:`training` package)."""

from training.__main__ import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
