"""Models: the exact HMM oracle, the DDiT denoisers (SEDD / MDLM), the AR adapter over
transformers causal LMs, and their loaders."""

from models.ar import HFCausalLM
from models.ar_loading import load_ar
from models.ddit import DDiT, DDiTConfig
from models.denoisers import MDLMDenoiser, SEDDDenoiser
from models.hmm import HMM
from models.hmm_models import HMMAutoregressive, HMMDenoiser
from models.loading import load_denoiser
from models.saving import save_denoiser
from models.tokenizer_check import check_shared_tokenizer

__all__ = [
    "DDiT", "DDiTConfig", "HFCausalLM", "HMM", "HMMAutoregressive", "HMMDenoiser",
    "MDLMDenoiser", "SEDDDenoiser", "check_shared_tokenizer", "load_ar", "load_denoiser",
    "save_denoiser",
]
