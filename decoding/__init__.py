"""Duet's decoding engine: protocols, schedules, float64 sampling, strategies, guides, and the
Coordinator that runs the loop. Nothing here imports a concrete model."""

from decoding.coordinator import Coordinator
from decoding.protocols import ARModel, Denoiser
from decoding.sampling import Marginals
from decoding.schedules import Cosine, Linear, LogLinear, Schedule
from decoding.types import Draft, GenerationResult, GuideContext, Selection, StepInfo, StepState

__all__ = [
    "ARModel", "Coordinator", "Cosine", "Denoiser", "Draft", "GenerationResult", "GuideContext",
    "Linear", "LogLinear", "Marginals", "Schedule", "Selection", "StepInfo", "StepState",
]
