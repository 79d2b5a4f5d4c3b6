"""Merging the hits of several spaces into one ranking.

This is the simple merge: with one space the raw similarity is the score; with several, reciprocal-rank
fusion (each space contributes ``1 / (rrf_k + rank)``), because raw cosines of different models are not
comparable.
"""

from __future__ import annotations

from dataclasses import dataclass

from xmodal.errors import ConfigError
from xmodal.search.query import SpaceHit


@dataclass(frozen=True, slots=True)
class MergedHit:
    item_id: int
    score: float
    modality: str | None
    space_scores: dict[str, float]
    best: SpaceHit  # the hit that spans the match (from the first space that found the item)


@dataclass(frozen=True, slots=True)
class RankMerger:
    """Merge per-space rankings; ``rrf_k`` dampens the weight of the top ranks (must be positive)."""

    rrf_k: int = 60

    def __post_init__(self) -> None:
        if self.rrf_k <= 0:
            raise ConfigError(f"rrf_k must be positive, got {self.rrf_k}")

    def merge(self, per_space: dict[str, list[SpaceHit]], k: int) -> list[MergedHit]:
        non_empty = {name: hits for name, hits in per_space.items() if hits}
        merged: dict[int, MergedHit] = {}
        for name, hits in non_empty.items():
            for rank, hit in enumerate(hits, start=1):
                contribution = hit.score if len(non_empty) == 1 else 1.0 / (self.rrf_k + rank)
                previous = merged.get(hit.item_id)
                if previous is None:
                    merged[hit.item_id] = MergedHit(hit.item_id, contribution, hit.modality, {name: hit.score}, hit)
                else:
                    previous.space_scores[name] = hit.score
                    merged[hit.item_id] = MergedHit(
                        hit.item_id,
                        previous.score + contribution,
                        hit.modality,
                        previous.space_scores,
                        previous.best,
                    )
        return sorted(merged.values(), key=lambda h: (-h.score, h.item_id))[:k]
