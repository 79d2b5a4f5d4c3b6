"""Late fusion: one score per candidate from the evidence of every (space, part) source.

Raw scores are not comparable across spaces (each model has its own cosine range), so each source's raw score
is first calibrated: dense spaces as standard deviations above the score of a random pair of stored vectors,
the lexical space as ``lexical_top_z`` times the BM25 score over the query's best BM25 score. The calibrated
fusion is the weighted sum of calibrated scores (a negative part counts only above-chance similarity);
reciprocal-rank fusion (``rrf``) the weighted sum of ``1 / (rrf_k + rank)``. Each source counts once per item
(its best chunk), however many chunks matched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from xmodal.config import FusionMethod
from xmodal.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Source:
    """Where evidence comes from: a space searched with one query part."""

    space: str
    part: int
    label: str
    weight: float


@dataclass(slots=True)
class Evidence:
    """What every source says about one candidate: raw and calibrated scores (absent: no evidence)."""

    item_id: int
    raw: dict[Source, float] = field(default_factory=dict)
    calibrated: dict[Source, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Fuser:
    """Turns evidence into fused scores; validates its parameters."""

    method: FusionMethod = FusionMethod.CALIBRATED
    rrf_k: int = 60

    def __post_init__(self) -> None:
        if self.rrf_k <= 0:
            raise ConfigError(f"rrf_k must be positive, got {self.rrf_k}")

    def fuse(self, evidence: Mapping[int, Evidence]) -> dict[int, tuple[float, dict[Source, float]]]:
        """Item id -> (fused score, each source's contribution)."""
        if self.method is FusionMethod.RRF:
            return self._rrf(evidence)
        result: dict[int, tuple[float, dict[Source, float]]] = {}
        for item_id, found in evidence.items():
            parts = {source: _contribution(source, value) for source, value in found.calibrated.items()}
            result[item_id] = (sum(parts.values()), parts)
        return result

    def _rrf(self, evidence: Mapping[int, Evidence]) -> dict[int, tuple[float, dict[Source, float]]]:
        by_source: dict[Source, list[tuple[float, int]]] = {}
        for item_id, found in evidence.items():
            for source, raw in found.raw.items():
                by_source.setdefault(source, []).append((raw, item_id))
        contributions: dict[int, dict[Source, float]] = {item_id: {} for item_id in evidence}
        for source, scored in by_source.items():
            for rank, (_, item_id) in enumerate(sorted(scored, key=lambda pair: (-pair[0], pair[1])), start=1):
                contributions[item_id][source] = source.weight / (self.rrf_k + rank)
        return {item_id: (sum(parts.values()), parts) for item_id, parts in contributions.items()}


def _contribution(source: Source, calibrated: float) -> float:
    """A part's weight times its calibrated score. A negative part only penalises similarity above chance: an
    item unlike "long sleeves" is not rewarded for it, else every unrelated item would rise."""
    return source.weight * (calibrated if source.weight > 0 else max(calibrated, 0.0))


def ranked(fused: Mapping[int, tuple[float, dict[Source, float]]]) -> list[int]:
    """Item ids by fused score, best first; ties by id, so the same query always gives the same order."""
    return sorted(fused, key=lambda item_id: (-fused[item_id][0], item_id))
