"""DCD (Liu et al. 2025): a small AR model as the copula of a masked diffusion model's
per-position marginals, with an optional importance-resampling correction."""

from copula.dcd import CopulaGuide
from copula.dcd_is import CopulaISGuide

__all__ = ["CopulaGuide", "CopulaISGuide"]
