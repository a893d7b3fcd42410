"""Models: the exact HMM oracle, the DDiT denoisers, the AR adapter and their loaders."""

from models.hmm import HMM
from models.hmm_models import HMMAutoregressive, HMMDenoiser

__all__ = ["HMM", "HMMAutoregressive", "HMMDenoiser"]
