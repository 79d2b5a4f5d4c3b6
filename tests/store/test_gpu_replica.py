"""The faiss-gpu side of the store, against a stand-in for faiss-gpu (tests/gpu runs the real one).

The stand-in behaves as faiss-gpu does where it matters: it refuses k and nprobe over 2048, and it refuses to copy
an IVF-PQ index with many code bytes unless the look-up tables are float16 (they exceed shared memory otherwise).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import pytest

from xmodal.encoders.base import l2_normalise
from xmodal.store.ann import GPU_MAX_K, GpuReplica, IndexKind, IndexPlan, IndexPolicy, SearchTuning, empty_index
from xmodal.store.manifest import read_manifest
from xmodal.store.merge_policy import MergePolicy
from xmodal.store.snapshot import SpaceSnapshot
from xmodal.store.writer import SpaceWriter


class ClonerOptions:
    """faiss.GpuMultipleClonerOptions' defaults, for the fields the store sets."""

    def __init__(self) -> None:
        self.useFloat16 = False
        self.shard = False


class FakeGpuIndex:
    """A GPU copy as the replica sees it: a CPU clone that enforces faiss-gpu's limits."""

    def __init__(self, index: faiss.Index, options: ClonerOptions, fail_searches: bool) -> None:
        pq = getattr(faiss.try_extract_index_ivf(index), "pq", None)
        if pq is not None and pq.M >= 48 and not options.useFloat16:
            raise RuntimeError("Error: GPU index IVFPQ: not enough shared memory for the float32 look-up tables")
        self.cpu = faiss.clone_index(index)
        self.options = options
        self.fail_searches = fail_searches
        self.searches: list[int] = []

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k > GPU_MAX_K:
            raise RuntimeError("Error: 'k > 0 && k <= GPU_MAX_SELECTION_K' failed")
        if self.fail_searches:
            raise RuntimeError("CUDA error 2 out of memory")
        self.searches.append(k)
        return self.cpu.search(queries, k)


class FakeParameterSpace:
    def set_index_parameter(self, index: FakeGpuIndex, name: str, value: int) -> None:
        if name == "nprobe" and value > GPU_MAX_K:
            raise RuntimeError("Error: 'nprobe <= GPU_MAX_SELECTION_K' failed")
        faiss.ParameterSpace().set_index_parameter(index.cpu, name, value)


def _fake_faiss_gpu(monkeypatch: pytest.MonkeyPatch, *, fail_searches: bool = False) -> list[FakeGpuIndex]:
    copies: list[FakeGpuIndex] = []

    def to_gpus(index: faiss.Index, co: ClonerOptions | None = None) -> FakeGpuIndex:
        copies.append(FakeGpuIndex(index, co or ClonerOptions(), fail_searches))
        return copies[-1]

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", to_gpus)
    monkeypatch.setattr(faiss, "GpuMultipleClonerOptions", ClonerOptions, raising=False)
    monkeypatch.setattr(faiss, "GpuParameterSpace", FakeParameterSpace, raising=False)
    return copies


def _vectors(count: int, dim: int, seed: int = 0) -> np.ndarray:
    return l2_normalise(np.random.default_rng(seed).normal(size=(count, dim)))


def _ivfpq64(count: int = 1000) -> tuple[faiss.Index, np.ndarray]:
    """An IVF-PQ index with 64 sub-quantizers, as the large-space tier builds (without OPQ and with 4-bit codes, to
    train in a moment)."""
    vectors = _vectors(count, 128)
    inner = faiss.index_factory(128, "IVF4,PQ64x4", faiss.METRIC_INNER_PRODUCT)
    inner.do_polysemous_training = False  # minutes with 64 sub-quantizers, and no search here uses it
    inner.train(vectors)
    index = faiss.IndexIDMap2(inner)
    index.add_with_ids(vectors, np.arange(count))
    return index, vectors


def _saved_flat(tmp_path: Path, count: int) -> tuple[SpaceSnapshot, np.ndarray]:
    writer = SpaceWriter.open(
        tmp_path / "s",
        space="s",
        encoder_spec="enc",
        fingerprint="abc",
        dim=8,
        dtype="float32",
        policy=IndexPolicy(),
        merges=MergePolicy(),
    )
    vectors = _vectors(count, 8)
    writer.add(np.arange(count), vectors)
    writer.publish()  # a published segment searched without a filter is what goes to the GPU
    return SpaceSnapshot.open(tmp_path / "s", read_manifest(tmp_path / "s")), vectors  # type: ignore[arg-type]


def test_ivfpq_copies_use_float16_look_up_tables_and_flat_ones_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    index, vectors = _ivfpq64()
    copies = _fake_faiss_gpu(monkeypatch)
    found = GpuReplica().search(index, 1, SearchTuning(nprobe=4), vectors[:5], 10)
    assert found is not None and found[1][:, 0].tolist() == list(range(5))
    assert copies[0].options.useFloat16 and copies[0].searches == [10]
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(128))
    flat.add_with_ids(vectors, np.arange(len(vectors)))
    assert GpuReplica().search(flat, 1, SearchTuning(), vectors[:5], 10) is not None
    assert not copies[1].options.useFloat16  # exact search keeps exact float32 vectors


def test_more_neighbours_than_faiss_gpu_allows_are_found_on_the_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, vectors = _saved_flat(tmp_path, 3000)
    copies = _fake_faiss_gpu(monkeypatch)
    _, ids = index.search(vectors[:2], 2560)  # the engine's second fetch for a page of 640
    assert ids.shape == (2, 2560) and ids[:, 0].tolist() == [0, 1]
    _, exact = faiss.knn(vectors[:2], vectors, 2560, metric=faiss.METRIC_INNER_PRODUCT)
    assert ids.tolist() == exact.tolist()
    assert not copies  # the CPU answered, and no copy was made for nothing
    index.search(vectors[:2], GPU_MAX_K)
    assert copies[0].searches == [GPU_MAX_K]  # up to the limit, the GPU does


def test_more_probes_than_faiss_gpu_allows_are_searched_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    index, vectors = _ivfpq64()
    copies = _fake_faiss_gpu(monkeypatch)
    replica = GpuReplica()
    assert replica.search(index, 1, SearchTuning(nprobe=GPU_MAX_K * 2), vectors[:3], 10) is None
    assert not copies
    assert replica.search(index, 1, SearchTuning(nprobe=4), vectors[:3], 10) is not None  # still usable


def test_a_failing_gpu_search_is_answered_by_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index, vectors = _saved_flat(tmp_path, 500)
    _fake_faiss_gpu(monkeypatch, fail_searches=True)
    _, ids = index.search(vectors[:3], 5)
    assert ids[:, 0].tolist() == [0, 1, 2]


def test_a_stale_gpu_copy_is_released_before_the_next_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(8))
    vectors = _vectors(100, 8)
    flat.add_with_ids(vectors, np.arange(100))
    copies = _fake_faiss_gpu(monkeypatch)
    replica = GpuReplica()
    replica.search(flat, 1, SearchTuning(), vectors[:1], 5)
    first = weakref.ref(copies.pop())
    alive_while_copying: list[bool] = []
    to_gpus: Callable[..., FakeGpuIndex] = faiss.index_cpu_to_all_gpus

    def watching(index: faiss.Index, co: ClonerOptions | None = None) -> FakeGpuIndex:
        alive_while_copying.append(first() is not None)
        return to_gpus(index, co)

    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", watching)
    replica.search(flat, 2, SearchTuning(), vectors[:1], 5)  # the index changed (version 2)
    assert alive_while_copying == [False]  # two copies never share the GPU's memory


def test_ivf_training_on_the_gpu_releases_the_gpu_index(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[weakref.ref[faiss.Index]] = []
    used: list[int] = []

    class CountingFlat(faiss.IndexFlatL2):
        def add(self, x: np.ndarray) -> None:  # k-means adds its centroids to the clustering index
            used.append(len(x))
            super().add(x)

    def to_gpus(index: faiss.Index, co: object = None) -> faiss.Index:
        gpu = CountingFlat(index.d)
        made.append(weakref.ref(gpu))
        return gpu

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", to_gpus)
    vectors = _vectors(2000, 16)
    index = empty_index(IndexPlan(IndexKind.IVFPQ, "IVF16,PQ2x4", 18), 16, IndexPolicy(), vectors)
    ivf = faiss.extract_index_ivf(index)
    assert ivf.is_trained and len(made) == 1
    assert ivf.clustering_index is None  # no pointer left to an index that no longer exists
    assert made[0]() is None  # the GPU index (and its resources) are gone
