"""After fusion: fold near-duplicates into one result, and optionally diversify (maximal marginal relevance).

Both compare items by their own-modality vectors (an image in an image space, a clip in an audio space, a text in a
text space), never by captions: two stamps that share the caption "A lion." are not duplicates. Two items are
only as alike as the least convinced of the spaces they share says; items that share no space are unalike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def similarity_matrix(
    order: Sequence[int],
    vectors: Mapping[int, Mapping[str, np.ndarray]],
    typical: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Pairwise similarity of the items in ``order`` (rows and columns in that order), in [-1, 1].

    ``typical``: per space, the mean similarity of two random items there. Where it is above 0, a cosine is read
    against it: ``1 - (1 - cosine) / (1 - typical)``, so a pair counts as alike when its distance is a small part
    of a random pair's. A space whose random pairs sit at 0.99 (a degenerate or random-weight model) then calls
    no two different items near-duplicates, while in a space whose random pairs are orthogonal nothing changes."""
    count = len(order)
    combined = np.full((count, count), np.inf)
    shared_any = np.zeros((count, count), dtype=bool)
    spaces = sorted({name for item_id in order for name in vectors.get(item_id, {})})
    for name in spaces:
        present = np.array([name in vectors.get(item_id, {}) for item_id in order])
        if present.sum() < 2:
            continue
        rows = np.flatnonzero(present)
        matrix = np.stack([vectors[order[i]][name] for i in rows])
        cosines = matrix @ matrix.T
        base = (typical or {}).get(name, 0.0)
        if base > 0:
            cosines = np.clip(1.0 - (1.0 - cosines) / max(1.0 - base, 1e-6), -1.0, 1.0)
        both = np.ix_(rows, rows)
        combined[both] = np.minimum(combined[both], cosines)
        shared_any[both] = True
    combined[~shared_any] = 0.0
    return combined


def collapse_duplicates(
    order: Sequence[int], *, similarity: np.ndarray, hashes: Mapping[int, str | None], threshold: float
) -> tuple[list[int], dict[int, list[int]]]:
    """(kept ids in order, kept id -> ids folded into it). An item folds into the best-ranked kept item with the
    same content hash or a similarity of at least ``threshold``."""
    kept: list[int] = []  # positions in order
    folded: dict[int, list[int]] = {}
    by_hash: dict[str, int] = {}
    for position, item_id in enumerate(order):
        digest = hashes.get(item_id)
        home = by_hash.get(digest) if digest else None
        if home is None and kept:
            close = np.flatnonzero(similarity[position, kept] >= threshold)
            home = order[kept[close[0]]] if len(close) else None
        if home is None:
            kept.append(position)
            folded[item_id] = []
            if digest:
                by_hash[digest] = item_id
        else:
            folded[home].append(item_id)
    return [order[position] for position in kept], folded


def maximal_marginal_relevance(
    order: Sequence[int], *, scores: Mapping[int, float], similarity: np.ndarray, diversity: float, count: int
) -> list[int]:
    """Greedy MMR over ``order``: each pick maximises ``(1 - diversity) * relevance - diversity * redundancy``,
    relevance being the fused score scaled to [0, 1] and redundancy the highest similarity to an earlier pick.
    Ties go to the better-ranked item; items past ``count`` keep their order."""
    if diversity <= 0 or len(order) <= 1:
        return list(order)
    values = np.array([scores[i] for i in order], dtype=np.float64)
    spread = values.max() - values.min()
    relevance = (values - values.min()) / spread if spread > 0 else np.ones_like(values)
    redundancy = np.full(len(order), -np.inf)
    remaining = np.ones(len(order), dtype=bool)
    picked: list[int] = []
    while remaining.any() and len(picked) < count:
        gain = (1 - diversity) * relevance - diversity * np.where(np.isinf(redundancy), 0.0, redundancy)
        gain[~remaining] = -np.inf
        best = int(np.argmax(gain))  # the first maximum: the better-ranked item wins ties
        picked.append(best)
        remaining[best] = False
        redundancy = np.maximum(redundancy, similarity[best])
    return [order[i] for i in picked] + [order[i] for i in np.flatnonzero(remaining)]
