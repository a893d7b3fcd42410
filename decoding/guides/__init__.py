"""Guides: which joint values to propose for the masked positions at each step, or, for the
verified and particle samplers, the whole outer loop (``run``, see ``decoding.loop``)."""

from decoding.guides.apd import APDGuide
from decoding.guides.base import Guide
from decoding.guides.greedy import Greedy
from decoding.guides.independent import Independent
from decoding.guides.smc import SMCGuide
from decoding.guides.speculative import SpeculativeGuide

__all__ = ["APDGuide", "Greedy", "Guide", "Independent", "SMCGuide", "SpeculativeGuide"]
