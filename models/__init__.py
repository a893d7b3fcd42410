"""Models: the denoiser families and their loaders (``models.families``, dispatched by
``models.registry``), the DDiT backbone (``models.ddit``), the AR adapter over transformers
causal LMs (``models.ar``), the exact HMM oracle (``models.oracle``) and the tokenizer check."""

from models.ar.adapter import HFCausalLM
from models.ar.loading import load_ar
from models.ddit.backbone import DDiT, DDiTConfig
from models.ddit.heads import MDLMDenoiser, SEDDDenoiser
from models.ddit.saving import save_denoiser
from models.families import load_denoiser
from models.oracle.adapters import HMMAutoregressive, HMMDenoiser
from models.oracle.hmm import HMM
from models.tokenizer_check import check_shared_tokenizer

__all__ = [
    "DDiT", "DDiTConfig", "HFCausalLM", "HMM", "HMMAutoregressive", "HMMDenoiser",
    "MDLMDenoiser", "SEDDDenoiser", "check_shared_tokenizer", "load_ar", "load_denoiser",
    "save_denoiser",
]
