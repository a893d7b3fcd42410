"""Guides: which joint values to propose for the masked positions at each step."""

from decoding.guides.base import Guide
from decoding.guides.independent import Independent

__all__ = ["Guide", "Independent"]
