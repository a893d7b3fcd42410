"""Energies for EDLM's importance resampling: E(x0, x_t), lower is more likely."""

from edlm.energies.ar import AREnergy

__all__ = ["AREnergy"]
