"""The vector store: immutable segments under a published manifest, one writer, readers that never see half a
publication, merges that rebuild from the raw vectors, old homes migrated."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import faiss
import numpy as np
import pytest

from xmodal.encoders.base import l2_normalise
from xmodal.errors import SpaceMismatchError
from xmodal.store.ann import IndexKind, IndexPolicy
from xmodal.store.manifest import HISTORY_DIR, MANIFEST_FILE, SEGMENTS_DIR, read_manifest
from xmodal.store.merge_policy import MergePolicy, SegmentSize
from xmodal.store.snapshot import SpaceSnapshot
from xmodal.store.writer import SpaceWriter


def _vectors(count: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return l2_normalise(np.random.default_rng(seed).normal(size=(count, dim))).astype(np.float32)


def _clustered(count: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim))
    return l2_normalise(centres[rng.integers(0, 40, count)] + 0.6 * rng.normal(size=(count, dim))).astype(np.float32)


def _writer(
    directory: Path,
    dim: int = 8,
    *,
    policy: IndexPolicy | None = None,
    merges: MergePolicy | None = None,
    dtype: str = "float32",
) -> SpaceWriter:
    return SpaceWriter.open(
        directory,
        space="s",
        encoder_spec="enc",
        fingerprint="abc",
        dim=dim,
        dtype=dtype,
        policy=policy or IndexPolicy(),
        merges=merges or MergePolicy(),
    )


def _snapshot(directory: Path) -> SpaceSnapshot:
    manifest = read_manifest(directory)
    assert manifest is not None
    return SpaceSnapshot.open(directory, manifest)


def _recall_at_10(snapshot: SpaceSnapshot, vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray) -> float:
    _, truth = faiss.knn(queries, vectors, 10, metric=faiss.METRIC_INNER_PRODUCT)
    _, found = snapshot.search(queries, 10)
    return float(np.mean([len(set(ids[t]) & set(f)) / 10 for t, f in zip(truth, found, strict=True)]))


def test_add_publish_search_delete_round_trip(tmp_path: Path) -> None:
    writer = _writer(tmp_path / "s")
    vectors = _vectors(50)
    writer.add(np.arange(1000, 1050), vectors)
    writer.publish()
    snapshot = _snapshot(tmp_path / "s")
    scores, found = snapshot.search(vectors[7], 3)
    assert found[0][0] == 1007 and scores[0][0] == pytest.approx(1.0, abs=1e-5)
    writer.remove(np.array([1007, 99999]))
    writer.publish()
    after = _snapshot(tmp_path / "s")
    assert after.ntotal == 49 and after.manifest.tombstone_count == 1  # an id no segment holds is not remembered
    assert 1007 not in after.search(vectors[7], 50)[1][0]
    assert 1007 in snapshot.search(vectors[7], 3)[1][0]  # the earlier snapshot is unchanged
    np.testing.assert_array_equal(after.reconstruct(np.array([1008])), vectors[8:9])


def test_a_snapshot_leaves_out_ids_it_does_not_hold_instead_of_failing(tmp_path: Path) -> None:
    writer = _writer(tmp_path / "s")
    writer.add(np.arange(10), _vectors(10))
    writer.publish()
    snapshot = _snapshot(tmp_path / "s")
    found, vectors = snapshot.vectors_of(np.array([3, 500, 7, -1]))  # 500: a row newer than the publication
    assert found.tolist() == [3, 7] and vectors.shape == (2, 8)
    with pytest.raises(KeyError):
        snapshot.reconstruct(np.array([500]))


def test_a_checkpoint_writes_one_new_segment_and_leaves_the_others_untouched(tmp_path: Path) -> None:
    writer = _writer(tmp_path / "s", merges=MergePolicy(factor=100))
    writer.add(np.arange(0, 100), _vectors(100))
    writer.publish()
    first = tmp_path / "s" / SEGMENTS_DIR / writer.manifest.segments[0].name
    before = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    writer.add(np.arange(100, 110), _vectors(10, seed=1))
    manifest = writer.publish()
    assert len(manifest.segments) == 2 and manifest.segments[1].count == 10
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == before
    assert manifest.high_water == 109 and manifest.seq == 2


def test_published_files_are_readable_by_others_per_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        writer = _writer(tmp_path / "s")
        writer.add(np.arange(5), _vectors(5))
        writer.publish()
    finally:
        os.umask(old)
    paths = [p for p in (tmp_path / "s").rglob("*")]
    assert paths
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o044 == 0o044, (path, oct(mode))  # group and others may read (mkdtemp made 0700 folders)


def test_a_reader_sees_one_whole_publication_while_the_writer_publishes(tmp_path: Path) -> None:
    writer = _writer(tmp_path / "s", merges=MergePolicy(factor=3, floor=4))
    for round_ in range(12):
        writer.add(np.arange(round_ * 10, round_ * 10 + 10), _vectors(10, seed=round_))
        writer.publish()
        snapshot = _snapshot(tmp_path / "s")
        # every publication is whole: all ids so far, each once, each with its own vector
        assert snapshot.ids().tolist() == list(range(round_ * 10 + 10))
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.startswith(".")]  # no temporary leftovers
    assert len(list((tmp_path / "s" / HISTORY_DIR).glob("m*.json"))) == 3  # older manifests are let go
    live = {s.name for s in read_manifest(tmp_path / "s").segments}  # type: ignore[union-attr]
    assert {p.name for p in (tmp_path / "s" / SEGMENTS_DIR).iterdir()} >= live


def test_merges_keep_the_raw_vectors_bit_identical_and_drop_deleted_ones(tmp_path: Path) -> None:
    writer = _writer(tmp_path / "s", merges=MergePolicy(factor=2, floor=10))
    vectors = _vectors(80, seed=3)
    for start in range(0, 80, 10):
        writer.add(np.arange(start, start + 10), vectors[start : start + 10])
        writer.publish()
    writer.remove(np.arange(0, 80, 2))
    manifest = writer.publish(final=True)
    assert len(manifest.segments) < 8 and manifest.tombstone_count < 40  # merged, and merged away the deleted
    snapshot = _snapshot(tmp_path / "s")
    ids, stored = snapshot.vectors()
    order = np.argsort(ids)
    assert ids[order].tolist() == list(range(1, 80, 2))
    np.testing.assert_array_equal(stored[order], vectors[1::2])


def test_ivf_pq_merged_three_times_keeps_exact_vectors_and_its_recall(tmp_path: Path) -> None:
    # checkpoints of 800 stay flat, merged segments (1,600 and 3,200) are IVF-PQ: every IVF-PQ build costs ~11 s
    # of OPQ training on 2 cores, and the merge that matters rebuilds IVF-PQ segments from their raw vectors
    policy = IndexPolicy(exact_below=1000, ivf_above=500, target_recall=0.8, tune_queries=100)
    merges = MergePolicy(factor=2, floor=800, max_sync=10**9)
    writer = _writer(tmp_path / "s", dim=16, policy=policy, merges=merges)
    everything = _clustered(3400, 16)
    vectors, queries = everything[:3200], everything[3200:]
    recalls = []
    for part in range(4):  # 4 segments of 800 merge pairwise: three merges in all
        ids = np.arange(part * 800, part * 800 + 800)
        writer.add(ids, vectors[ids])
        manifest = writer.publish()
        snapshot = _snapshot(tmp_path / "s")
        held = snapshot.ids()
        recalls.append(_recall_at_10(snapshot, vectors[held], held, queries))
    assert any(s.kind is IndexKind.IVFPQ for s in manifest.segments)
    assert manifest.segments[0].count == 3200  # one segment after three merges
    ids, stored = _snapshot(tmp_path / "s").vectors()
    np.testing.assert_array_equal(stored[np.argsort(ids)], vectors)  # raw vectors: bit-identical to the input
    # rebuilt from exact vectors, the merged index is the one a single build of the originals makes: no drift
    direct = _writer(tmp_path / "direct", dim=16, policy=policy, merges=merges)
    direct.add(np.arange(3200), vectors)
    direct.publish()
    fresh = _snapshot(tmp_path / "direct")
    assert recalls[-1] == pytest.approx(_recall_at_10(fresh, vectors, np.arange(3200), queries), abs=1e-9)
    assert recalls[-1] >= policy.target_recall - 0.05


def test_float16_is_the_default_storage_and_halves_the_bytes(tmp_path: Path) -> None:
    writer = _writer(tmp_path / "s", dim=64, dtype="float16")
    vectors = _vectors(100, dim=64)
    writer.add(np.arange(100), vectors)
    manifest = writer.publish()
    raw = np.load(tmp_path / "s" / SEGMENTS_DIR / manifest.segments[0].name / "vectors.npy", mmap_mode="r")
    assert raw.dtype == np.float16
    np.testing.assert_allclose(_snapshot(tmp_path / "s").reconstruct(np.arange(100)), vectors, atol=1e-3)


def test_selective_allow_list_on_an_approximate_segment_is_searched_exactly(tmp_path: Path) -> None:
    writer = _writer(tmp_path / "s", dim=16, policy=IndexPolicy(exact_below=100))
    vectors = _clustered(2000, 16)
    writer.add(np.arange(2000), vectors)
    manifest = writer.publish()
    assert manifest.segments[0].kind is IndexKind.HNSW
    allowed = np.arange(0, 2000, 97)
    _, found = _snapshot(tmp_path / "s").search(vectors[5], 5, allowed=allowed)
    exact = allowed[np.argsort(-(vectors[allowed] @ vectors[5]))[:5]]
    assert found[0].tolist() == exact.tolist()


def test_hnsw_segment_is_tuned_and_skips_deleted_ids(tmp_path: Path) -> None:
    policy = IndexPolicy(exact_below=1000, target_recall=0.95)
    writer = _writer(tmp_path / "s", dim=24, policy=policy)
    everything = _clustered(4200, 24)
    vectors, held_out, ids = everything[:4000], everything[4000:], np.arange(1, 4001)
    writer.add(ids, vectors)
    writer.publish()
    snapshot = _snapshot(tmp_path / "s")
    assert snapshot.kind is IndexKind.HNSW and snapshot.index_key == "HNSW32"
    tuning = snapshot.tuning
    assert tuning.ef_search is not None and tuning.measured_recall is not None and tuning.measured_recall >= 0.95
    assert _recall_at_10(snapshot, vectors, ids, held_out) >= 0.93
    writer.remove(ids[:100])
    writer.publish()
    after = _snapshot(tmp_path / "s")
    assert after.tombstones == 100
    assert not set(after.search(vectors[:100], 20)[1].ravel().tolist()) & set(ids[:100].tolist())


def test_fingerprint_mismatch_is_refused(tmp_path: Path) -> None:
    writer = _writer(tmp_path / "s")
    writer.add(np.arange(3), _vectors(3))
    writer.publish()
    with pytest.raises(SpaceMismatchError, match="spaces drop"):
        _snapshot(tmp_path / "s").check_compatible("enc2", "zzz")


def test_the_tiered_policy_merges_a_full_tier_and_defers_big_merges() -> None:
    policy = MergePolicy(factor=3, floor=10, max_sync=50)
    small = [SegmentSize(f"a{i}", 10, 10) for i in range(3)]
    assert policy.next_merge(small, final=False) == ["a0", "a1", "a2"]
    assert policy.next_merge(small[:2], final=False) is None
    big = [SegmentSize(f"b{i}", 30, 30) for i in range(3)]
    assert policy.next_merge(big, final=False) is None  # 90 vectors > max_sync: waits for the end of the run
    assert policy.next_merge(big, final=True) == ["b0", "b1", "b2"]
    assert policy.next_merge([SegmentSize("c", 100, 60)], final=False) is None  # too big to rewrite now
    assert policy.next_merge([SegmentSize("c", 40, 20)], final=False) == ["c"]  # half deleted: rewritten
    with pytest.raises(ValueError, match="at least 2"):
        MergePolicy(factor=1)


def test_an_old_layout_home_migrates_on_first_open(tmp_path: Path) -> None:
    from xmodal.spaces import VectorSpace

    directory = tmp_path / "s"
    version = directory / "v1764300000000000000"
    version.mkdir(parents=True)
    vectors = _vectors(30)
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(8))
    index.add_with_ids(vectors, np.arange(100, 130))
    faiss.write_index(index, str(version / "index.faiss"))
    np.save(version / "tombstones.npy", np.array([101], dtype=np.int64))
    header = {"name": "s", "encoder_spec": "enc", "fingerprint": "abc", "dim": 8, "score_mean": 0.0}
    (version / "space.json").write_text(json.dumps(header))
    os.symlink(version.name, directory / "current")

    space = VectorSpace("s", encoder=None, directory=directory, catalog=None, dtype="float32")  # type: ignore[arg-type]
    snapshot = space.stored_index()
    assert snapshot is not None and snapshot.ids().tolist() == [100, *range(102, 130)]
    np.testing.assert_array_equal(snapshot.reconstruct(np.array([129])), vectors[29:30])
    assert (directory / MANIFEST_FILE).is_file() and not (directory / "current").exists()
    assert not version.exists()


def test_a_newer_publication_loads_in_the_background_while_the_old_one_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server's refresh returns at once; requests keep the snapshot they had until the new one is open, then
    the new one is swapped in whole."""
    import threading

    from xmodal.spaces import VectorSpace

    directory = tmp_path / "s"
    writer = _writer(directory)
    writer.add(np.arange(10), _vectors(10))
    writer.publish()
    reader = VectorSpace("s", encoder=None, directory=directory, catalog=None)  # type: ignore[arg-type]
    first = reader.stored_index()
    assert first is not None and first.ids().tolist() == list(range(10))

    writer.add(np.arange(10, 15), _vectors(5, seed=1))
    writer.publish()  # another process's publication
    loading, release = threading.Event(), threading.Event()
    real_open = SpaceSnapshot.open

    def slow_open(*args: object, **kwargs: object) -> SpaceSnapshot:
        loading.set()
        assert release.wait(timeout=60)
        return real_open(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SpaceSnapshot, "open", slow_open)
    assert reader.refresh() is True  # returns while the load is held
    assert loading.wait(timeout=60)
    assert reader.stored_index() is first  # requests meanwhile answer from the old publication, whole
    assert reader.refresh() is False  # a second refresh does not start a second load
    release.set()
    loader = next(t for t in threading.enumerate() if t.name == "xmodal-load-s")
    loader.join(timeout=60)
    assert reader.stored_index().ids().tolist() == list(range(15))  # type: ignore[union-attr]
