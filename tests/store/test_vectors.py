"""The FAISS side of the store: ids, removal, versioned saves, fingerprint checks, index growth and tuning."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import faiss
import numpy as np
import pytest

from xmodal.encoders.base import l2_normalise
from xmodal.errors import SpaceMismatchError
from xmodal.store.ann import IndexKind, IndexPolicy
from xmodal.store.vectors import CURRENT_LINK, HEADER_FILE, INDEX_FILE, SpaceHeader, VectorIndex, current_version


def _vectors(count: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return l2_normalise(np.random.default_rng(seed).normal(size=(count, dim)))


def _clustered(count: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim))
    return l2_normalise(centres[rng.integers(0, 40, count)] + 0.6 * rng.normal(size=(count, dim)))


def _recall_at_10(index: VectorIndex, vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray) -> float:
    _, truth = faiss.knn(queries, vectors, 10, metric=faiss.METRIC_INNER_PRODUCT)
    _, found = index.search(queries, 10)
    return float(np.mean([len(set(ids[t]) & set(f)) / 10 for t, f in zip(truth, found, strict=True)]))


def test_add_search_remove_round_trip(tmp_path: Path) -> None:
    index = VectorIndex.create(tmp_path / "s", SpaceHeader("s", "enc", "abc", 8))
    vectors = _vectors(50)
    ids = np.arange(1000, 1050)
    index.add(ids, vectors)
    scores, found = index.search(vectors[7], 3)
    assert found[0][0] == 1007 and scores[0][0] == pytest.approx(1.0, abs=1e-5)
    assert index.remove(np.array([1007, 99999])) == 1
    assert 1007 not in index.search(vectors[7], 50)[1][0]
    np.testing.assert_allclose(index.reconstruct(np.array([1008])), vectors[8:9], atol=1e-6)


def test_each_save_publishes_a_new_version_and_keeps_one_before(tmp_path: Path) -> None:
    index = VectorIndex.create(tmp_path / "s", SpaceHeader("s", "enc", "abc", 8))
    published = []
    for round_ in range(4):
        index.add(np.arange(round_ * 10, round_ * 10 + 10), _vectors(10, seed=round_))
        index.save()
        published.append(current_version(tmp_path / "s"))
    assert len(set(published)) == 4  # a new folder each time, switched by renaming the `current` link
    assert (tmp_path / "s" / CURRENT_LINK).is_symlink()
    versions = [p for p in (tmp_path / "s").iterdir() if p.is_dir() and not p.is_symlink()]
    assert sorted(versions) == sorted(published[-2:])  # the current one and the one before
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.startswith(".")]  # no temporary leftovers
    loaded = VectorIndex.load(tmp_path / "s")
    assert loaded is not None and sorted(loaded.ids().tolist()) == list(range(40))


def test_a_space_saved_before_versions_loads_and_moves_to_versions(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    directory.mkdir()
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(8))
    flat.add_with_ids(_vectors(5), np.arange(5))
    faiss.write_index(flat, str(directory / INDEX_FILE))
    (directory / HEADER_FILE).write_text(json.dumps({"name": "s", "encoder_spec": "e", "fingerprint": "f", "dim": 8}))
    loaded = VectorIndex.load(directory)
    assert loaded is not None and loaded.ntotal == 5
    loaded.add(np.array([9]), _vectors(1, seed=3))
    loaded.save()
    assert not (directory / INDEX_FILE).exists() and (directory / CURRENT_LINK).is_symlink()
    reloaded = VectorIndex.load(directory)
    assert reloaded is not None and reloaded.ntotal == 6


def test_another_model_is_refused(tmp_path: Path) -> None:
    index = VectorIndex.create(tmp_path / "s", SpaceHeader("clip", "open_clip:A", "aaaa", 8))
    index.check_compatible("open_clip:A", "aaaa")
    with pytest.raises(SpaceMismatchError, match="different model"):
        index.check_compatible("open_clip:B", "bbbb")


def test_wrong_dimension_is_refused(tmp_path: Path) -> None:
    index = VectorIndex.create(tmp_path / "s", SpaceHeader("s", "enc", "abc", 8))
    with pytest.raises(ValueError, match="8-d"):
        index.add(np.arange(2), _vectors(2, dim=4))


def test_saving_calibrates_scores_against_random_pairs(tmp_path: Path) -> None:
    index = VectorIndex.create(tmp_path / "s", SpaceHeader("s", "enc", "abc", 8))
    vectors = _vectors(500)
    index.add(np.arange(500), vectors)
    index.save()
    loaded = VectorIndex.load(tmp_path / "s")
    assert loaded is not None
    pairs = vectors[:250] @ vectors[250:].T
    assert loaded.header.score_mean == pytest.approx(float(pairs.mean()), abs=0.02)
    assert loaded.header.score_std == pytest.approx(float(pairs.std()), rel=0.1)
    assert loaded.calibrated(np.array([loaded.header.score_mean]))[0] == pytest.approx(0.0)


def test_an_index_saved_before_calibration_is_calibrated_on_load(tmp_path: Path) -> None:
    index = VectorIndex.create(tmp_path / "s", SpaceHeader("s", "enc", "abc", 8))
    index.add(np.arange(100), _vectors(100) * 0 + _vectors(1))  # identical vectors: every pair scores 1
    index.save()
    header_path = current_version(tmp_path / "s") / HEADER_FILE  # type: ignore[operator]
    header = json.loads(header_path.read_text())
    del header["score_mean"], header["score_std"]
    os.chmod(header_path, 0o644)
    header_path.write_text(json.dumps(header))
    loaded = VectorIndex.load(tmp_path / "s")
    assert loaded is not None and loaded.header.score_mean == pytest.approx(1.0, abs=1e-4)


def test_a_growing_space_becomes_hnsw_tuned_to_the_target_recall(tmp_path: Path) -> None:
    policy = IndexPolicy(exact_below=1000, target_recall=0.95)
    index = VectorIndex.create(tmp_path / "s", SpaceHeader("s", "enc", "abc", 24), policy)
    everything = _clustered(4200, 24)
    vectors, held_out, ids = everything[:4000], everything[4000:], np.arange(1, 4001)
    index.add(ids[:800], vectors[:800])
    index.save()
    assert index.kind is IndexKind.FLAT  # below the threshold: exact
    index.add(ids[800:], vectors[800:])
    index.save()
    loaded = VectorIndex.load(tmp_path / "s", policy)
    assert loaded is not None and loaded.kind is IndexKind.HNSW and loaded.header.index_key == "HNSW32"
    tuning = loaded.tuning
    assert tuning.ef_search is not None and tuning.measured_recall is not None and tuning.measured_recall >= 0.95
    assert tuning.target_recall == 0.95 and tuning.tuned_at == 4000  # stored with the index
    assert _recall_at_10(loaded, vectors, ids, held_out) >= 0.93  # held-out queries reach about the target


def test_hnsw_removals_are_tombstones_that_search_skips_until_compaction(tmp_path: Path) -> None:
    policy = IndexPolicy(exact_below=100, compact_ratio=0.2)
    index = VectorIndex.create(tmp_path / "s", SpaceHeader("s", "enc", "abc", 16), policy)
    vectors, ids = _clustered(1000, 16), np.arange(1000)
    index.add(ids, vectors)
    index.save()
    assert index.kind is IndexKind.HNSW
    gone = np.arange(0, 100)
    assert index.remove(np.concatenate([gone, [5000]])) == 100
    assert index.tombstones == 100 and index.ntotal == 900
    _, found = index.search(vectors[:100], 20)
    assert not set(found.ravel().tolist()) & set(gone.tolist())  # tombstoned ids are never returned
    index.save()
    loaded = VectorIndex.load(tmp_path / "s", policy)
    assert loaded is not None and loaded.tombstones == 100  # below the ratio: kept, and kept on disk
    assert not set(loaded.search(vectors[:100], 20)[1].ravel().tolist()) & set(gone.tolist())
    loaded.remove(np.arange(100, 300))
    loaded.save()  # 300 tombstones > 0.2 x 700 live: compacted
    assert loaded.tombstones == 0 and loaded.ntotal == 700 and loaded.kind is IndexKind.HNSW
    assert sorted(loaded.ids().tolist()) == list(range(300, 1000))


def test_a_reused_id_replaces_its_tombstoned_vector(tmp_path: Path) -> None:
    index = VectorIndex.create(tmp_path / "s", SpaceHeader("s", "enc", "abc", 16), IndexPolicy(exact_below=100))
    vectors = _clustered(500, 16)
    index.add(np.arange(500), vectors)
    index.save()
    index.remove(np.array([499]))
    fresh = _vectors(1, dim=16, seed=9)
    index.add(np.array([499]), fresh)  # SQLite may hand out the id of a deleted row again
    assert index.ids().tolist().count(499) == 1 and index.tombstones == 0
    np.testing.assert_allclose(index.reconstruct(np.array([499])), fresh, atol=1e-6)


def test_an_allow_list_on_an_approximate_index_is_searched_exactly(tmp_path: Path) -> None:
    index = VectorIndex.create(tmp_path / "s", SpaceHeader("s", "enc", "abc", 16), IndexPolicy(exact_below=100))
    vectors = _clustered(2000, 16)
    index.add(np.arange(2000), vectors)
    index.save()
    allowed = np.arange(0, 2000, 97)
    _, found = index.search(vectors[5], 5, allowed=allowed)
    exact = allowed[np.argsort(-(vectors[allowed] @ vectors[5]))[:5]]
    assert found[0].tolist() == exact.tolist()


def test_past_the_memory_budget_a_space_becomes_ivf_pq(tmp_path: Path) -> None:
    policy = IndexPolicy(exact_below=500, memory_budget_bytes=3000 * 60, target_recall=0.8)
    index = VectorIndex.create(tmp_path / "s", SpaceHeader("s", "enc", "abc", 16), policy)
    everything = _clustered(3100, 16)
    vectors, held_out, ids = everything[:3000], everything[3000:], np.arange(3000)
    index.add(ids, vectors)
    index.save()
    loaded = VectorIndex.load(tmp_path / "s", policy)
    assert loaded is not None and loaded.kind is IndexKind.IVFPQ and loaded.header.index_key.startswith("OPQ")
    assert loaded.tuning.nprobe is not None and loaded.tuning.measured_recall >= 0.8  # type: ignore[operator]
    loaded.remove(np.array([1, 2, 3]))
    assert not {1, 2, 3} & set(loaded.search(vectors[:4], 10)[1].ravel().tolist())
    assert _recall_at_10(loaded, vectors, ids, held_out) >= 0.7


def test_with_faiss_gpu_unfiltered_searches_go_to_a_gpu_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No GPU here: faiss's "copy to all GPUs" is replaced by a CPU clone that counts its uses.
    copies: list[faiss.Index] = []

    def to_gpus(index: faiss.Index, co: object = None) -> faiss.Index:
        copies.append(faiss.clone_index(index))
        return copies[-1]

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "GpuMultipleClonerOptions", SimpleNamespace, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", to_gpus)
    index = VectorIndex.create(tmp_path / "s", SpaceHeader("s", "enc", "abc", 8))
    vectors = _vectors(200)
    index.add(np.arange(200), vectors)
    _, while_writing = index.search(vectors[:3], 5)
    assert not copies  # an index being written is searched where it is
    index.save()
    _, found = index.search(vectors[:3], 5)
    assert len(copies) == 1 and found.tolist() == while_writing.tolist()
    index.search(vectors[:3], 5)
    assert len(copies) == 1  # made once, reused
    assert index.search(vectors[:3], 5, allowed=np.arange(50))[1].max() < 50 and len(copies) == 1  # filters: CPU
    index.remove(np.array([0]))
    index.save()
    assert 0 not in index.search(vectors[:1], 5)[1][0] and len(copies) == 2  # a changed index is copied again
