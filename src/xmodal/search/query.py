"""What a search asks and what it answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from xmodal.modality import Modality


@dataclass(frozen=True, slots=True)
class AudioClip:
    """Decoded query audio: mono float32 samples and their rate."""

    samples: np.ndarray
    sample_rate: int


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A validated query: a text, a decoded image and/or audio clip, how many results, and which to keep."""

    text: str | None = None
    image: Image.Image | None = None
    audio: AudioClip | None = None
    k: int = 10
    modalities: frozenset[Modality] | None = None  # None: every modality
    space: str | None = None  # None: every space that can embed the query

    def parts(self) -> list[Modality]:
        """The modalities of the query's parts."""
        parts = ((Modality.TEXT, self.text), (Modality.IMAGE, self.image), (Modality.AUDIO, self.audio))
        return [modality for modality, value in parts if value is not None]


@dataclass(frozen=True, slots=True)
class SpaceHit:
    """An item found in one space: its best chunk's similarity and where that chunk lies."""

    item_id: int
    score: float
    modality: str | None
    space: str
    start: int | None = None
    end: int | None = None


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One result: the item, its merged score and each space's raw similarity."""

    item_id: int
    score: float
    modality: str | None
    path: str
    media_type: str | None
    caption: str | None
    text_excerpt: str | None
    metadata: dict[str, Any]
    width: int | None = None
    height: int | None = None
    space_scores: dict[str, float] = field(default_factory=dict)
    match: tuple[int, int] | None = None  # character span of the best-matching chunk of the text/caption/transcript
    time_span: tuple[float, float] | None = None  # seconds into an audio item where the best match lies
    transcript: str | None = None
    duration: float | None = None
