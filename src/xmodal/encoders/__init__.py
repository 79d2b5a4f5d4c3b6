"""Encoders: one interface (``Encoder``), one registry from spec strings to encoders."""

from xmodal.encoders.base import Encoder, TextChunk
from xmodal.encoders.registry import build_encoder

__all__ = ["Encoder", "TextChunk", "build_encoder"]
