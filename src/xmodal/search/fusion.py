"""Late fusion: one score per candidate from the evidence of every (space, part) source.

Raw scores are not comparable across spaces (each model has its own cosine range), so each source's raw score
is first calibrated: dense spaces as standard deviations above the score of a random pair of stored vectors,
the lexical space as ``lexical_top_z`` times the share of the query it matched (its BM25 over that of a document
holding every query word) to the power ``lexical_share_power``: a full match counts about what a dense space gives
its best true match, and a match on some of the query's words less than its share.

The calibrated fusion treats the spaces searched with one query part as views of the same evidence: their
above-chance scores combine as a Euclidean norm, so a single strong source outweighs several weak ones (one
source at 6: 6; three at 2: 3.5) while agreement still adds (6 and 3: 6.7), and an item is not favoured for
living in more spaces; below-chance scores subtract. Parts add up (an item should match each), and a negative
part subtracts its above-chance similarity only. Reciprocal-rank fusion (``rrf``) is the weighted sum of
``1 / (rrf_k + rank)``. Each source counts once per item (its best chunk), however many chunks matched.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from xmodal.config import FusionMethod
from xmodal.errors import ConfigError


class Source(NamedTuple):
    """Where evidence comes from: a space searched with one query part. (A named tuple: it keys every
    candidate's evidence, and a tuple hashes in C.)"""

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

    space_weights: Mapping[str, float] = field(default_factory=dict)  # fitted per space (absent: 1)

    def fuse(self, evidence: Mapping[int, Evidence]) -> dict[int, tuple[float, dict[Source, float]]]:
        """Item id -> (fused score, each source's contribution)."""
        if self.method is FusionMethod.RRF:
            return self._rrf(evidence)
        result: dict[int, tuple[float, dict[Source, float]]] = {}
        for item_id, found in evidence.items():
            parts = combine(found.calibrated, self.space_weights)
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


def combine(
    calibrated: Mapping[Source, float], space_weights: Mapping[str, float] | None = None
) -> dict[Source, float]:
    """Each source's contribution to an item's fused score (they add up to it); see the module's docstring.
    ``space_weights`` scales each space's calibrated scores (fitted by ``xmodal eval --fit-fusion``; absent: 1)."""
    by_part: dict[int, list[Source]] = defaultdict(list)
    for source in calibrated:
        by_part[source.part].append(source)
    scale = space_weights or {}
    scaled = {source: scale.get(source.space, 1.0) * value for source, value in calibrated.items()}
    contributions: dict[Source, float] = {}
    for sources in by_part.values():
        above = {s: s.weight * scaled[s] for s in sources if s.weight > 0 and scaled[s] > 0}
        norm = math.sqrt(sum(value * value for value in above.values()))
        for source in sources:
            value = scaled[source]
            if source.weight <= 0:
                # A negative part only penalises similarity above chance: an item unlike "long sleeves" is not
                # rewarded for it, else every unrelated item would rise.
                contributions[source] = source.weight * max(value, 0.0)
            elif source in above:
                contributions[source] = above[source] ** 2 / norm
            else:
                contributions[source] = source.weight * value  # at or below chance: a (small) penalty
    return contributions


def ranked(fused: Mapping[int, tuple[float, dict[Source, float]]]) -> list[int]:
    """Item ids by fused score, best first; ties by id, so the same query always gives the same order."""
    return sorted(fused, key=lambda item_id: (-fused[item_id][0], item_id))


# Fitted weights (``xmodal eval --fit-fusion``), kept in the home --------------------------------------------------

FITTED_FILE = "fusion.json"
Weights = dict[str, dict[str, float]]  # query modality ("text", "image", "audio") -> space -> weight


def load_fitted_weights(home: Path) -> Weights:
    """The fitted weights in ``home``, or none (every space counts 1) before ``xmodal eval --fit-fusion`` ran."""
    path = home / FITTED_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path} is not a fitted-fusion file ({exc}); delete it or run `xmodal eval --fit-fusion`."
        ) from exc
    weights = data.get("weights") if isinstance(data, dict) else None
    if not isinstance(weights, dict):
        raise ConfigError(f"{path} has no 'weights'; delete it or run `xmodal eval --fit-fusion` again.")
    return {str(kind): {str(space): float(w) for space, w in spaces.items()} for kind, spaces in weights.items()}


def save_fitted_weights(home: Path, weights: Weights, about: Mapping[str, object]) -> Path:
    """Write ``weights`` (and what they were fitted on) into ``home``, atomically; returns the file."""
    path = home / FITTED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"weights": weights, **about}, indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path
