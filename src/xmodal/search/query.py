"""What a search asks and what it answers.

A query is a list of weighted parts: texts, images, audio clips, indexed items ("more like this") and raw vectors.
A negative weight pushes items that match that part down ("red dress", not "long sleeves").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from xmodal.config import FusionMethod
from xmodal.modality import Modality
from xmodal.store.filters import ItemFilter


class PartKind(StrEnum):
    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    ITEM = "item"
    VECTOR = "vector"


@dataclass(frozen=True, slots=True)
class AudioClip:
    """Decoded query audio: mono float32 samples and their rate."""

    samples: np.ndarray
    sample_rate: int


@dataclass(frozen=True, slots=True)
class QueryPart:
    """One part of a query with its weight (negative: push matching items down). ``space`` names the space of a
    raw vector. Build with ``QueryPart.text("red dress")``, ``QueryPart.image(path, weight=-0.5)``, ...; the
    engine decodes the media before the search sees it."""

    kind: PartKind
    value: Any
    weight: float = 1.0
    space: str | None = None

    @property
    def modality(self) -> Modality | None:
        """The modality an encoder must embed for this part (items and vectors need none)."""
        return {PartKind.TEXT: Modality.TEXT, PartKind.IMAGE: Modality.IMAGE, PartKind.AUDIO: Modality.AUDIO}.get(
            self.kind
        )

    @classmethod
    def text(cls, value: str, weight: float = 1.0) -> QueryPart:
        return cls(PartKind.TEXT, value, weight)

    @classmethod
    def image(cls, value: Any, weight: float = 1.0) -> QueryPart:
        """``value``: a path, encoded bytes or a PIL image."""
        return cls(PartKind.IMAGE, value, weight)

    @classmethod
    def audio(cls, value: Any, weight: float = 1.0) -> QueryPart:
        """``value``: a path or encoded bytes."""
        return cls(PartKind.AUDIO, value, weight)

    @classmethod
    def item(cls, item_id: int, weight: float = 1.0) -> QueryPart:
        """More like an indexed item (the item itself is left out of the results)."""
        return cls(PartKind.ITEM, int(item_id), weight)

    @classmethod
    def vector(cls, space: str, values: Any, weight: float = 1.0) -> QueryPart:
        """A raw vector of ``space``'s dimension."""
        return cls(PartKind.VECTOR, values, weight, space)

    def label(self, index: int) -> str:
        """A short name for explanations: ``text#0 "red dress"``."""
        if self.kind is PartKind.TEXT:
            shown = self.value if len(self.value) <= 40 else self.value[:37] + "..."
            return f'{self.kind}#{index} "{shown}"'
        if self.kind is PartKind.ITEM:
            return f"item#{index} {self.value}"
        return f"{self.kind}#{index}"


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A validated query and its options."""

    parts: tuple[QueryPart, ...]
    k: int = 10
    item_filter: ItemFilter = field(default_factory=ItemFilter)
    space: str | None = None  # None: every space that can embed a part
    offset: int = 0  # from the cursor
    min_score: float | None = None
    explain: bool = False
    fusion: FusionMethod = FusionMethod.CALIBRATED
    diversity: float = 0.0  # 0: off; up to 1: maximal-marginal-relevance trade-off
    collapse_duplicates: bool = True

    @property
    def modalities(self) -> frozenset[str] | None:
        return self.item_filter.modalities

    @property
    def text(self) -> str | None:
        """The text of the first positive text part (the lexical space reads it)."""
        return next((p.value for p in self.parts if p.kind is PartKind.TEXT and p.weight > 0), None)


@dataclass(frozen=True, slots=True)
class SpaceHit:
    """An item found in one space: its best chunk's similarity and where that chunk lies."""

    item_id: int
    score: float
    modality: str | None
    space: str
    start: int | None = None
    end: int | None = None
    vector_id: int | None = None  # the best chunk's vector


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one (space, part) pair added to a result's fused score."""

    space: str
    part: str
    raw: float
    calibrated: float
    weight: float
    contribution: float
    origin: str | None = None  # "ocr": the match was in the words read from the image


@dataclass(frozen=True, slots=True)
class OcrMatch:
    """Where a query matched the words read from an image: the span of its OCR text and the lines' polygons."""

    span: tuple[int, int]
    text: str
    boxes: tuple[tuple[tuple[float, float], ...], ...]


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One result: the item, its fused score and each space's raw similarity."""

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
    duplicates: tuple[int, ...] = ()  # near-duplicates collapsed into this result
    explanation: tuple[Contribution, ...] = ()
    ocr_text: str | None = None  # the words read from an image
    ocr: OcrMatch | None = None  # where the query matched them
