"""Retrieval metrics with CLIP_benchmark's definitions, for one query's ranked list and its relevant set.

A query is a hit at K when any relevant item is in its top K (Recall@K). mAP@K averages, over the relevant items
found in the top K, the precision at their ranks, divided by min(#relevant, K). nDCG@K uses binary relevance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence, Set

KS = (1, 5, 10)


def recall_at(ranked: Sequence[str], relevant: Set[str], k: int) -> float:
    """1.0 when any relevant item is among the first ``k``, else 0.0."""
    return 1.0 if any(item in relevant for item in ranked[:k]) else 0.0


def average_precision_at(ranked: Sequence[str], relevant: Set[str], k: int) -> float:
    """Average precision over the first ``k`` results."""
    if not relevant:
        return 0.0
    found, total = 0, 0.0
    for rank, item in enumerate(ranked[:k], start=1):
        if item in relevant:
            found += 1
            total += found / rank
    return total / min(len(relevant), k)


def ndcg_at(ranked: Sequence[str], relevant: Set[str], k: int) -> float:
    """Normalised discounted cumulative gain over the first ``k`` results, binary relevance."""
    if not relevant:
        return 0.0
    dcg = sum(1.0 / math.log2(rank + 1) for rank, item in enumerate(ranked[:k], start=1) if item in relevant)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(relevant), k) + 1))
    return dcg / ideal


def summarise(runs: Sequence[tuple[Sequence[str], Set[str]]], *, curve_to: int = 10) -> dict[str, float | list[float]]:
    """Mean R@1/5/10, mAP@10, nDCG@10 and the Recall@K curve for K = 1..``curve_to`` over (ranked, relevant)."""
    count = max(1, len(runs))
    summary: dict[str, float | list[float]] = {
        f"R@{k}": sum(recall_at(r, rel, k) for r, rel in runs) / count for k in KS
    }
    summary["mAP@10"] = sum(average_precision_at(r, rel, 10) for r, rel in runs) / count
    summary["nDCG@10"] = sum(ndcg_at(r, rel, 10) for r, rel in runs) / count
    summary["recall_curve"] = [sum(recall_at(r, rel, k) for r, rel in runs) / count for k in range(1, curve_to + 1)]
    summary["queries"] = float(len(runs))
    return summary
