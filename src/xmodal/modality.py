"""The kinds of media xmodal indexes and queries."""

from __future__ import annotations

from enum import StrEnum


class Modality(StrEnum):
    """What an item or a query part is: its content decides, not its file name."""

    IMAGE = "image"
    TEXT = "text"
    AUDIO = "audio"
