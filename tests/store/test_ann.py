"""Choosing an index is a pure function of (count, dimension, memory budget)."""

from __future__ import annotations

import pytest

from xmodal.store.ann import IndexKind, IndexPolicy, choose_index

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
