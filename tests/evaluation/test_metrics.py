"""Metrics follow CLIP_benchmark: a hit at K when any relevant item is in the top K; binary-relevance mAP, nDCG."""

from __future__ import annotations

import math

import pytest

from xmodal.evaluation.metrics import average_precision_at, ndcg_at, recall_at, summarise


def test_recall_counts_a_query_once_whatever_the_number_of_relevant_items() -> None:
    ranked = ["a", "b", "c", "d"]
    assert recall_at(ranked, {"c", "d"}, 1) == 0.0
    assert recall_at(ranked, {"c", "d"}, 3) == 1.0
    assert recall_at(ranked, {"z"}, 10) == 0.0


def test_average_precision_by_hand() -> None:
    # relevant at ranks 1 and 3 of 2 relevant: (1/1 + 2/3) / 2
    assert average_precision_at(["a", "x", "b"], {"a", "b"}, 10) == pytest.approx((1 + 2 / 3) / 2)
    # more relevant items than K: divided by K
    assert average_precision_at(["a", "b"], {"a", "b", "c"}, 2) == pytest.approx(1.0)
    assert average_precision_at(["x", "y"], {"a"}, 10) == 0.0


def test_ndcg_by_hand() -> None:
    assert ndcg_at(["a", "b"], {"a"}, 10) == pytest.approx(1.0)
    assert ndcg_at(["x", "a"], {"a"}, 10) == pytest.approx(1 / math.log2(3))
    ideal = 1 + 1 / math.log2(3)
    assert ndcg_at(["a", "x", "b"], {"a", "b"}, 10) == pytest.approx((1 + 1 / math.log2(4)) / ideal)


def test_summary_averages_over_queries_and_draws_the_recall_curve() -> None:
    summary = summarise([(["a", "b"], frozenset({"a"})), (["x", "b"], frozenset({"b"}))], curve_to=3)
    assert summary["R@1"] == 0.5 and summary["R@5"] == 1.0 and summary["queries"] == 2
    assert summary["recall_curve"] == [0.5, 1.0, 1.0]
    assert summary["mAP@10"] == pytest.approx((1 + 0.5) / 2)
