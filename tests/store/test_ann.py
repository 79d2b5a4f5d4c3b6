"""Choosing an index is a pure function of (count, dimension, memory budget)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from xmodal.store.ann import (
    IndexKind,
    IndexPolicy,
    SearchTuning,
    choose_index,
    exact_neighbours,
    search_parameters,
    tune,
)

GIB = 2**30


@pytest.mark.parametrize(
    ("count", "dim", "budget", "kind", "key"),
    [
        (0, 512, 8 * GIB, IndexKind.FLAT, "Flat"),
        (49_999, 512, 8 * GIB, IndexKind.FLAT, "Flat"),
        (50_000, 512, 8 * GIB, IndexKind.HNSW, "HNSW32"),
        (400_000, 50, 8 * GIB, IndexKind.HNSW, "HNSW32"),
        (1_999_999, 512, 8 * GIB, IndexKind.HNSW, "HNSW32"),
        (2_000_000, 512, 8 * GIB, IndexKind.IVFPQ, "OPQ64_256,IVF4096,PQ64"),
        (1_000_000, 512, 1 * GIB, IndexKind.IVFPQ, "OPQ64_256,IVF4096,PQ64"),  # HNSW would take ~2.4 GB
        (400_000, 50, 100 * 2**20, IndexKind.IVFPQ, "OPQ24_48,IVF2048,PQ24"),
        (100_000_000, 768, 4 * GIB, IndexKind.IVFPQ, "OPQ24_96,IVF4096,PQ24"),  # code bytes shrink to fit
    ],
)
def test_index_follows_size_and_memory_budget(count: int, dim: int, budget: int, kind: IndexKind, key: str) -> None:
    plan = choose_index(count, dim, IndexPolicy(memory_budget_bytes=budget))
    assert (plan.kind, plan.key) == (kind, key)
    if kind is not IndexKind.FLAT:
        assert count * plan.bytes_per_vector <= budget or kind is IndexKind.IVFPQ


def test_a_bad_count_or_dimension_is_refused() -> None:
    with pytest.raises(ValueError, match="dimension"):
        choose_index(10, 0, IndexPolicy())


def _clustered(count: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, dim))
    points = centres[rng.integers(0, 50, count)] + 0.7 * rng.normal(size=(count, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def _recall(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, k: int, tuning: SearchTuning) -> float:
    truth = exact_neighbours(vectors, queries, k)
    _, found = index.search(queries, k, params=search_parameters(index, tuning, None).params)
    return float(np.mean([len(set(t) & set(f)) / k for t, f in zip(truth.tolist(), found.tolist(), strict=True)]))


def test_the_effort_is_tuned_at_the_fetch_size_searches_use() -> None:
    """A fused search fetches hundreds of vectors per space; an effort tuned to find the 10 nearest finds far
    fewer of the 400 nearest. Tuned at the fetch size, recall at that size reaches the target."""
    vectors, queries = _clustered(6000, 32), _clustered(100, 32, seed=1)
    index = faiss.IndexHNSWFlat(32, 16, faiss.METRIC_INNER_PRODUCT)
    index.add(vectors)
    rows = np.arange(len(vectors))
    at_10 = tune(index, vectors, rows, queries, target_recall=0.95)
    at_400 = tune(index, vectors, rows, queries, target_recall=0.95, k=400)
    assert at_400.ef_search is not None and at_10.ef_search is not None and at_400.ef_search >= 400
    assert _recall(index, vectors, queries, 400, at_400) >= 0.95
    assert at_400.measured_recall == pytest.approx(_recall(index, vectors, queries, 400, at_400))


def test_tuning_stops_where_more_effort_buys_no_recall() -> None:
    """Coarse product quantisation caps recall below the target: the tuner keeps the effort where recall stopped
    improving instead of scanning every list (nprobe = nlist, an exhaustive search at IVF's cost)."""
    vectors, queries = _clustered(8000, 32), _clustered(100, 32, seed=1)
    index = faiss.index_factory(32, "IVF64,PQ4", faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)
    index.add(vectors)
    tuning = tune(index, vectors, np.arange(len(vectors)), queries, target_recall=0.99)
    assert tuning.measured_recall is not None and tuning.measured_recall < 0.99  # the cap
    assert tuning.nprobe is not None and tuning.nprobe < 64
    everything = SearchTuning(nprobe=64)
    assert _recall(index, vectors, queries, 10, everything) - tuning.measured_recall < 0.02  # little was left
