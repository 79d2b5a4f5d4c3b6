"""After fusion: fold near-duplicates into one result, and optionally diversify (maximal marginal relevance).

Both compare items by their own-modality vectors (an image in an image space, a clip in an audio space, a text in a
text space), never by captions: two stamps that share the caption "A lion." are not duplicates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def similarity(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    """Lowest cosine between two items' representative vectors over the spaces both have one in: two items are
    only as alike as the least convinced space says (0 when they share no space)."""
    shared = a.keys() & b.keys()
    return min((float(a[name] @ b[name]) for name in shared), default=0.0)


def collapse_duplicates(
    order: Sequence[int],
    *,
    vectors: Mapping[int, Mapping[str, np.ndarray]],
    hashes: Mapping[int, str | None],
    threshold: float,
) -> tuple[list[int], dict[int, list[int]]]:
    """(kept ids in order, kept id -> ids folded into it). An item folds into the first better-ranked kept item
    with the same content hash or a cosine of at least ``threshold``."""
    kept: list[int] = []
    folded: dict[int, list[int]] = {}
    for item_id in order:
        home = next(
            (
                other
                for other in kept
                if (hashes.get(item_id) and hashes.get(item_id) == hashes.get(other))
                or similarity(vectors.get(item_id, {}), vectors.get(other, {})) >= threshold
            ),
            None,
        )
        if home is None:
            kept.append(item_id)
            folded[item_id] = []
        else:
            folded[home].append(item_id)
    return kept, folded


def maximal_marginal_relevance(
    order: Sequence[int],
    *,
    scores: Mapping[int, float],
    vectors: Mapping[int, Mapping[str, np.ndarray]],
    diversity: float,
    count: int,
) -> list[int]:
    """Greedy MMR over ``order``: each pick maximises ``(1 - diversity) * relevance - diversity * redundancy``,
    with relevance the fused score scaled to [0, 1] and redundancy the highest similarity to an earlier pick."""
    if diversity <= 0 or len(order) <= 1:
        return list(order)
    values = np.array([scores[i] for i in order], dtype=np.float64)
    low, high = values.min(), values.max()
    relevance = {i: (scores[i] - low) / (high - low) if high > low else 1.0 for i in order}
    remaining = list(order)
    picked: list[int] = []
    while remaining and len(picked) < count:
        best = max(
            remaining,
            key=lambda i: (
                (1 - diversity) * relevance[i]
                - diversity * max((similarity(vectors.get(i, {}), vectors.get(j, {})) for j in picked), default=0.0),
                -order.index(i),
            ),
        )
        picked.append(best)
        remaining.remove(best)
    return picked + remaining
