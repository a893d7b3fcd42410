"""EDLM (Xu et al. 2025): energy-based importance resampling of a masked diffusion model's
parallel draft, with an AR model (or another energy) as the energy."""

from edlm.guide import EnergyGuide

__all__ = ["EnergyGuide"]
