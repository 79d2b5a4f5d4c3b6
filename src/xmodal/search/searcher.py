"""Answering a query: embed it in every space that can take it, search each, merge, attach catalog rows."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from xmodal.encoders.base import l2_normalise
from xmodal.encoders.speech import Segment, Transcript
from xmodal.errors import InvalidQueryError, NotFoundError, WeightsUnavailableError
from xmodal.modality import Modality
from xmodal.search.merge import MergedHit, RankMerger
from xmodal.search.query import SearchQuery, SearchResult, SpaceHit
from xmodal.search.retrieval import search_space
from xmodal.spaces import SpaceSet, VectorSpace
from xmodal.store.catalog import Catalog
from xmodal.store.models import Item

log = logging.getLogger(__name__)


@dataclass
class SearchResponse:
    """The results, plus which spaces answered and which could not (with the reason)."""

    results: list[SearchResult]
    spaces_searched: list[str] = field(default_factory=list)
    spaces_unavailable: dict[str, str] = field(default_factory=dict)


class Searcher:
    """Runs queries against a catalog and its spaces. Thread-safe."""

    def __init__(self, catalog: Catalog, spaces: SpaceSet, merger: RankMerger | None = None) -> None:
        self.catalog = catalog
        self.spaces = spaces
        self.merger = merger or RankMerger()

    def search(self, query: SearchQuery) -> SearchResponse:
        candidates = self._candidate_spaces(query)
        response = SearchResponse(results=[])
        per_space: dict[str, list[SpaceHit]] = {}
        for space in candidates:
            try:
                space.checked_index()  # loads the encoder and refuses a space built by another model
            except WeightsUnavailableError as exc:
                if query.space is not None:
                    raise
                response.spaces_unavailable[space.name] = str(exc).splitlines()[0]
                continue
            response.spaces_searched.append(space.name)
            if space.size:
                vector = self._embed(space, query)
                per_space[space.name] = search_space(space, vector, k=query.k, modalities=query.modalities)
        if not response.spaces_searched and response.spaces_unavailable:
            reasons = "; ".join(f"{name}: {reason}" for name, reason in response.spaces_unavailable.items())
            raise InvalidQueryError(f"No space that can embed this query is available ({reasons}).")
        response.results = self._attach(self.merger.merge(per_space, query.k))
        return response

    def _candidate_spaces(self, query: SearchQuery) -> list[VectorSpace]:
        parts = query.parts()
        if not parts:
            raise InvalidQueryError("A query needs a text, an image or an audio clip.")
        if query.space is not None:
            if query.space not in self.spaces:
                raise NotFoundError(f"No space named '{query.space}'. Spaces: {', '.join(self.spaces.names())}.")
            space = self.spaces[query.space]
            unembeddable = [m.value for m in parts if not space.embeds(m)]
            if unembeddable:
                raise InvalidQueryError(
                    f"Space '{space.name}' cannot embed {' or '.join(unembeddable)} queries; "
                    f"it embeds {', '.join(sorted(m.value for m in space.encoder.modalities))}."
                )
            return [space]
        return [space for space in self.spaces if any(space.embeds(m) for m in parts)]

    @staticmethod
    def _embed(space: VectorSpace, query: SearchQuery) -> np.ndarray:
        """One query vector: the normalised sum of the parts this space can embed."""
        vectors: list[np.ndarray] = []
        if query.text is not None and space.embeds(Modality.TEXT):
            chunks = [chunk.text for chunk in space.encoder.chunk(query.text)] or [query.text]
            vectors.append(space.encoder.encode_texts(chunks).mean(axis=0))
        if query.image is not None and space.embeds(Modality.IMAGE):
            vectors.append(space.encoder.encode_images([query.image])[0])
        if query.audio is not None and space.embeds(Modality.AUDIO):
            windows = space.encoder.prepare_audio(query.audio.samples, query.audio.sample_rate)
            vectors.append(space.encoder.encode_prepared_audio([features for _, _, features in windows]).mean(axis=0))
        return l2_normalise(np.sum(vectors, axis=0, keepdims=True))[0]

    def _locate(self, best: SpaceHit, item: Item) -> tuple[tuple[int, int] | None, tuple[float, float] | None]:
        """(character span, time span) of an item's best-matching chunk or window."""
        if best.start is None or best.end is None:
            return None, None
        if item.modality == Modality.AUDIO and self.spaces[best.space].embeds(Modality.AUDIO):
            return None, (best.start / 1000, best.end / 1000)  # an audio window, in milliseconds
        if item.modality == Modality.AUDIO and item.transcript and item.transcript_segments:
            transcript = Transcript(item.transcript, tuple(Segment(**s) for s in item.transcript_segments))
            return (best.start, best.end), transcript.time_of(best.start, best.end)
        return (best.start, best.end), None

    def _attach(self, hits: list[MergedHit]) -> list[SearchResult]:
        items = self.catalog.get_items([hit.item_id for hit in hits])
        results: list[SearchResult] = []
        for hit in hits:
            item = items.get(hit.item_id)
            if item is None:  # deleted between search and lookup
                continue
            match, time_span = self._locate(hit.best, item)
            results.append(
                SearchResult(
                    item_id=item.id,
                    score=hit.score,
                    modality=item.modality,
                    path=item.path,
                    media_type=item.media_type,
                    caption=item.caption,
                    text_excerpt=item.text_excerpt,
                    metadata=dict(item.user_metadata or {}),
                    width=item.width,
                    height=item.height,
                    space_scores=dict(hit.space_scores),
                    match=match,
                    time_span=time_span,
                    transcript=item.transcript,
                    duration=item.duration,
                )
            )
        return results
