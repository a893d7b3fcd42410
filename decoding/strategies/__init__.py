"""Step strategies: which positions to commit (and remask) at each step. One per file."""

from decoding.strategies.analytic import Analytic
from decoding.strategies.ancestral import Ancestral
from decoding.strategies.base import Strategy
from decoding.strategies.blocks import Blocks
from decoding.strategies.confidence import Confidence
from decoding.strategies.euler import Euler
from decoding.strategies.left_to_right import LeftToRight
from decoding.strategies.remdm import ReMDM
from decoding.strategies.threshold import Threshold

__all__ = ["Analytic", "Ancestral", "Blocks", "Confidence", "Euler", "LeftToRight", "ReMDM",
           "Strategy", "Threshold"]
