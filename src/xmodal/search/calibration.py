"""Calibration per (query modality, item modality) pair of a space: what a random, unrelated pair scores.

One null distribution per space mixes image-image and text-text pairs; in CLIP a text query against images scores
well below that mean, so cross-modal evidence would be z-scored low. Here the null of ``text -> image`` is
measured from stored text vectors against stored image vectors (or from ``prompts``, generic query vectors, when
the space holds no texts), likewise ``audio -> text`` and every other pair present.

The table is plain data (``{"text->image": [mean, std], ...}``), fit to be kept in a space's manifest.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from xmodal.modality import Modality
from xmodal.search.query import QueryPart
from xmodal.spaces import VectorSpace
from xmodal.store.agreement import agreement_weight
from xmodal.store.catalog import Catalog
from xmodal.store.snapshot import SpaceSnapshot

PAIRS = 2000
MIN_STD = 1e-3

Table = dict[str, tuple[float, float]]


def pair_key(query_modality: str, item_modality: str) -> str:
    return f"{query_modality}->{item_modality}"


def calibrate_pairs(
    vectors: np.ndarray,
    modalities: Sequence[str],
    *,
    query_modalities: Sequence[str] | None = None,
    prompts: Mapping[str, np.ndarray] | None = None,
    pairs: int = PAIRS,
    seed: int = 0,
) -> Table:
    """(mean, std) of inner products of random unrelated pairs, per (query modality, item modality).

    ``vectors[i]`` came from an input of modality ``modalities[i]`` (an image's pixels: ``image``; its caption:
    ``text``). Queries of modality q are the stored vectors of modality q, or ``prompts[q]`` when none are stored;
    ``query_modalities`` limits the query side (default: every modality present or prompted). A vector is never
    paired with itself."""
    labels = np.asarray(modalities)
    if len(labels) != len(vectors):
        raise ValueError(f"{len(vectors)} vectors but {len(labels)} modalities")
    rng = np.random.default_rng(seed)
    present = sorted(set(labels.tolist()))
    asked = list(query_modalities) if query_modalities is not None else sorted(set(present) | set(prompts or {}))
    table: Table = {}
    for query_modality in asked:
        stored = np.flatnonzero(labels == query_modality)
        if len(stored):
            queries, query_rows = vectors, stored
        elif prompts and query_modality in prompts and len(prompts[query_modality]):
            queries, query_rows = np.asarray(prompts[query_modality]), None
        else:
            continue
        for item_modality in present:
            items = np.flatnonzero(labels == item_modality)
            left = rng.integers(0, len(queries) if query_rows is None else len(query_rows), size=pairs)
            right = items[rng.integers(0, len(items), size=pairs)]
            left_rows = left if query_rows is None else query_rows[left]
            if query_rows is not None:
                same = left_rows == right
                if same.all():
                    continue  # one vector alone: no unrelated pair
                left_rows, right = left_rows[~same], right[~same]
            scores = np.einsum("ij,ij->i", queries[left_rows], vectors[right])
            table[pair_key(query_modality, item_modality)] = (float(scores.mean()), float(max(scores.std(), MIN_STD)))
    return table


def calibrated(
    scores: np.ndarray | float,
    table: Mapping[str, Sequence[float]],
    query_modality: str,
    item_modality: str,
    default: tuple[float, float],
) -> np.ndarray:
    """Raw inner products as standard deviations above a random pair of this (query, item) modality pair;
    ``default`` (the space's overall mean and std) when the table lacks the pair."""
    mean, std = table.get(pair_key(query_modality, item_modality), default)
    return (np.asarray(scores, dtype=np.float64) - mean) / std


# Per query: what a random item of the space scores for *this* query --------------------------------------------


MIN_NULL_ITEMS = 20  # fewer sampled items of a modality: no null of its own (the space's mixed one, or the table)


@dataclass(frozen=True, slots=True)
class NullSample:
    """A fixed random sample of a space's items of one modality, to measure what a random item scores for a query.

    A table of random pairs says what a random *query* scores on average; queries differ (in a random-weight or
    poorly fitted model every query vector has its own offset, and a query about a common topic sits close to
    many items), so a raw score is judged against the same query's scores on these items instead. ``vectors``
    holds every vector of the sampled items; item ``k`` owns rows ``starts[k]`` up to the next start (an item
    scores as its best vector, as in the search). ``items`` is how many items of the modality the space holds."""

    vectors: np.ndarray
    starts: np.ndarray
    items: int
    typical_similarity: float = 0.0  # the mean similarity of two different sampled items (their first vectors)

    def scores(self, query: np.ndarray) -> np.ndarray:
        """Each sampled item's score for ``query`` (its best vector's inner product)."""
        if not len(self.starts):
            return np.zeros(0)
        return np.maximum.reduceat(self.vectors @ np.asarray(query, dtype=np.float32), self.starts).astype(np.float64)

    def null(self, query: np.ndarray) -> QueryNull | None:
        """This query's null distribution, or ``None`` when the sample is too small to tell."""
        scores = self.scores(query)
        if len(scores) < MIN_NULL_ITEMS:
            return None
        return QueryNull(float(scores.mean()), float(max(scores.std(), MIN_STD)), self.items)


@dataclass(frozen=True, slots=True)
class QueryNull:
    """One query's scores on random items of one modality in one space: their mean and spread."""

    mean: float
    std: float
    items: int  # how many items of the modality the space holds (about)

    def z(self, scores: np.ndarray | float) -> np.ndarray:
        """Raw scores as standard deviations above a random item's score for this query."""
        return (np.asarray(scores, dtype=np.float64) - self.mean) / self.std


class QueryCalibration:
    """One query vector's nulls in one space, per item modality (``None``: all items mixed): :meth:`z` calibrates
    a candidate against the null of its own modality (the mixed one when its own was not sampled)."""

    def __init__(self, nulls: Mapping[str | None, QueryNull]) -> None:
        self.nulls = dict(nulls)

    def z(self, score: float, modality: str | None) -> float:
        null = self.nulls.get(modality) or self.nulls[None]
        return float(null.z(score))

    def z_each(self, scores: np.ndarray, modalities: Sequence[str | None]) -> list[float]:
        """:meth:`z` of each score against its item's modality, one array operation per modality."""
        result = np.empty(len(scores), dtype=np.float64)
        kinds = np.asarray(modalities, dtype=object)
        for modality in set(modalities):
            mask = kinds == modality
            null = self.nulls.get(modality) or self.nulls[None]
            result[mask] = null.z(scores[mask])
        return result.tolist()


def sample_items(
    snapshot: SpaceSnapshot, catalog: Catalog, *, size: int, key: str | None = None, seed: int = 0
) -> dict[str | None, NullSample]:
    """Random items of the space ``snapshot`` holds (about ``size`` of each modality there, and ``size`` of all
    together under ``None``) with all their vectors; read once per publication (see :class:`NullSamples`).
    ``key`` names the version's rows in the catalog (``clip@v2`` while a space switches model; default: the
    space's name)."""
    ids = snapshot.ids()
    if not len(ids):
        return {}
    rng = np.random.default_rng(seed)
    picked = rng.choice(ids, size=min(len(ids), 4 * size), replace=False)
    hits = catalog.resolve_vectors(picked.tolist())
    owners = sorted({hit.item_id for hit in hits.values()})
    modality_of = {hit.item_id: hit.modality for hit in hits.values()}
    owned = catalog.vector_ids_of_items(key or snapshot.name, owners)
    wanted = np.asarray([v for item_id in owners for v in owned.get(item_id, [])], dtype=np.int64)
    found, vectors = snapshot.vectors_of(wanted)
    rows = {int(v): row for row, v in enumerate(found.tolist())}
    groups: dict[str | None, list[int]] = {}
    for item_id in rng.permutation(np.asarray(owners, dtype=np.int64)).tolist():
        if any(v in rows for v in owned.get(item_id, [])):
            groups.setdefault(modality_of[item_id], []).append(item_id)
            groups.setdefault(None, []).append(item_id)
    sampled_vectors = sum(len(owned[item_id]) for item_id in groups.get(None, []))
    per_item = sampled_vectors / max(1, len(groups.get(None, [])))  # vectors per item: the space's items, roughly
    samples: dict[str | None, NullSample] = {}
    for modality, members in groups.items():
        share = len(members) / len(groups[None])  # this modality's share of the sampled items
        order: list[int] = []
        starts: list[int] = []
        for item_id in members[:size]:
            starts.append(len(order))
            order.extend(rows[v] for v in owned[item_id] if v in rows)
        items = max(len(members), round(share * len(ids) / per_item))
        sampled = vectors[order].astype(np.float32)
        starts_array = np.asarray(starts, dtype=np.int64)
        typical = mean_pair_similarity(sampled[starts_array]) if len(starts_array) else 0.0
        samples[modality] = NullSample(sampled, starts_array, items, typical)
    return samples


def mean_pair_similarity(vectors: np.ndarray) -> float:
    """The mean inner product of two different rows of ``vectors`` (0 for fewer than two)."""
    count = len(vectors)
    if count < 2:
        return 0.0
    gram = vectors.astype(np.float64) @ vectors.T.astype(np.float64)
    return float((gram.sum() - np.trace(gram)) / (count * (count - 1)))


class NullSamples:
    """Each space's :class:`NullSample` per item modality, drawn once per publication (again when the space has
    published since). Thread-safe."""

    def __init__(self, catalog: Catalog, *, size: int) -> None:
        self._catalog = catalog
        self._size = size
        self._samples: dict[str, tuple[int, dict[str | None, NullSample]]] = {}
        self._lock = threading.Lock()

    def of(self, snapshot: SpaceSnapshot, key: str | None = None) -> dict[str | None, NullSample]:
        """The samples of ``snapshot``, the space version whose catalog rows are named ``key`` (default: the
        space's name); each version of a space has its own publications, so its own samples."""
        key = key or snapshot.name
        seq = snapshot.manifest.seq
        cached = self._samples.get(key)
        if cached is None or cached[0] != seq:
            with self._lock:
                cached = self._samples.get(key)
                if cached is None or cached[0] != seq:
                    cached = (seq, sample_items(snapshot, self._catalog, size=self._size, key=key))
                    self._samples[key] = cached
        return cached[1]

    def typical_similarity(self, snapshot: SpaceSnapshot, key: str | None = None) -> float:
        """How alike two random items of the space are (the most alike modality's mean pair similarity): near 1
        in a degenerate space (a random-weight model maps every image to nearly one vector), where a high
        similarity says little."""
        samples = self.of(snapshot, key)
        means = [sample.typical_similarity for modality, sample in samples.items() if modality is not None]
        return max(means, default=0.0)

    def calibration(
        self, snapshot: SpaceSnapshot, query: np.ndarray, key: str | None = None
    ) -> QueryCalibration | None:
        """``query``'s nulls in the space of ``snapshot``; ``None`` when too few items are sampled to tell."""
        samples = self.of(snapshot, key)
        nulls = {modality: null for modality, sample in samples.items() if (null := sample.null(query)) is not None}
        return QueryCalibration(nulls) if None in nulls else None


def space_agreement(space: VectorSpace, part: QueryPart, *, text_space_searched: bool) -> dict[str | None, float]:
    """Item modality -> the weight of ``part``'s evidence about such items in ``space`` when spaces are fused:

    - a part of another modality than the items' vectors (a text query about images in ``clip``): how well the
      space's captions find their own items (:func:`~xmodal.store.agreement.agreement_weight`);
    - a text part against items this space holds as text (texts, and images or sounds by their caption or
      transcript) in a space that is not a text-only one, while a text-only space (``text``) is searched with the
      same part: 0, as the text model is the one made for comparing texts, and an item is not to count twice for
      living in more spaces (CLIP's text tower is trained to match images, not paraphrases);
    - otherwise 1."""
    index = space.stored_index()
    if index is None or part.modality is None:
        return {}
    query = part.modality.value
    own = space.encoder.modalities
    weights: dict[str | None, float] = {}
    for modality in Modality:
        held_as = modality if modality in own else Modality.TEXT  # how the space holds items of this modality
        if held_as.value != query:
            weights[modality.value] = agreement_weight(index.manifest.calibration, pair_key(query, held_as.value))
        elif held_as is Modality.TEXT and own != {Modality.TEXT} and text_space_searched:
            weights[modality.value] = 0.0
    return weights
