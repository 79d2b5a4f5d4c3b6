"""Immutable segments: a batch of a space's vectors, their catalog ids, and a FAISS index over them.

A segment is a folder written once and never changed::

    spaces/clip/segments/s00000000000000000042/
        ids.npy         int64, ascending: the catalog's embedding ids
        vectors.npy     the raw vectors, float16 (or float32), row i belongs to ids[i]; memory-mapped by readers
        index.faiss     only for HNSW / IVF-PQ segments; its labels are row numbers, not catalog ids
        segment.json    count, id range, index key and tuned search effort

Raw vectors are kept beside every index: exact re-scoring and every rebuild read them, so an IVF-PQ segment that
is merged three times still holds the very vectors that were added. Flat segments need no index file; a reader
holds their vectors as float32 and searches them exactly.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from xmodal.store.ann import (
    TUNE_K,
    GpuReplica,
    IndexKind,
    IndexPlan,
    IndexPolicy,
    SearchTuning,
    empty_index,
    search_parameters,
    tune,
)

IDS_FILE = "ids.npy"
VECTORS_FILE = "vectors.npy"
INDEX_FILE = "index.faiss"
INFO_FILE = "segment.json"


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """What a manifest says of a segment (also stored in the segment's own ``segment.json``)."""

    name: str
    count: int
    min_id: int
    max_id: int
    index_key: str = "Flat"
    tuning: dict[str, float | int | None] = field(default_factory=dict)

    @property
    def kind(self) -> IndexKind:
        if self.index_key == "Flat":
            return IndexKind.FLAT
        return IndexKind.HNSW if self.index_key.startswith("HNSW") else IndexKind.IVFPQ

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "count": self.count,
            "min_id": self.min_id,
            "max_id": self.max_id,
            "index_key": self.index_key,
            "tuning": dict(self.tuning),
        }


def unique_ids(values: np.ndarray) -> np.ndarray:
    """The distinct values of an int64 array, ascending. A sort: ``np.unique`` (NumPy 2.4) takes 100x longer on a
    million ids."""
    ordered = np.sort(np.asarray(values, dtype=np.int64), kind="stable")
    if len(ordered) < 2:
        return ordered
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]


def fsync_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file at ``path`` and flush it to the disk (mode per the umask)."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, array)
        handle.flush()
        os.fsync(handle.fileno())


def write_segment(
    directory: Path,
    name: str,
    ids: np.ndarray,
    vectors: np.ndarray,
    *,
    plan: IndexPlan,
    policy: IndexPolicy,
    dtype: np.dtype,
) -> SegmentInfo:
    """Write a new segment folder ``directory/name`` (ids need not be sorted; they are sorted here)."""
    order = np.argsort(ids, kind="stable")
    ids = np.ascontiguousarray(ids[order], dtype=np.int64)
    stored = np.ascontiguousarray(vectors[order], dtype=dtype)
    folder = directory / name
    folder.mkdir(parents=True)
    _save_npy(folder / IDS_FILE, ids)
    _save_npy(folder / VECTORS_FILE, stored)
    tuning = SearchTuning()
    if plan.kind is not IndexKind.FLAT:
        index, tuning = build_index(stored.astype(np.float32), plan=plan, policy=policy)
        fsync_file(folder / INDEX_FILE, faiss.serialize_index(index).tobytes())
    info = SegmentInfo(
        name=name,
        count=len(ids),
        min_id=int(ids[0]) if len(ids) else 0,
        max_id=int(ids[-1]) if len(ids) else 0,
        index_key=plan.key,
        tuning=tuning.as_dict() if plan.kind is not IndexKind.FLAT else {},
    )
    fsync_file(folder / INFO_FILE, json.dumps(info.as_dict(), indent=2).encode())
    fsync_dir(folder)
    return info


def build_index(vectors: np.ndarray, *, plan: IndexPlan, policy: IndexPolicy) -> tuple[faiss.Index, SearchTuning]:
    """An HNSW or IVF-PQ index over ``vectors`` (labels = row numbers), tuned on held-out rows.

    The tuning queries are rows of ``vectors`` left out while the effort is tuned, then added: a stored vector finds
    its own neighbourhood too easily, and tuning on those overestimates recall.
    """
    training = None
    if plan.kind is IndexKind.IVFPQ:
        sample = np.random.default_rng(0).choice(
            len(vectors), size=min(len(vectors), policy.train_sample), replace=False
        )
        training = vectors[np.sort(sample)]
    index = empty_index(plan, vectors.shape[1], policy, training, id_map=False)
    rows = np.arange(len(vectors), dtype=np.int64)
    held_out = np.zeros(len(vectors), dtype=bool)
    if len(vectors) > 10 * TUNE_K:
        count = min(policy.tune_queries, len(vectors) // 10)
        held_out[np.random.default_rng(1).choice(len(vectors), size=count, replace=False)] = True
    _add(index, vectors[~held_out], rows[~held_out])
    tuning = tune(
        index,
        vectors[~held_out],
        rows[~held_out],
        vectors[held_out],
        target_recall=policy.target_recall,
        k=policy.tune_k,
    )
    if held_out.any():
        _add(index, vectors[held_out], rows[held_out])
    tuning.tuned_at = len(vectors)
    return index, tuning


def _add(index: faiss.Index, vectors: np.ndarray, rows: np.ndarray) -> None:
    if len(rows):
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(rows, dtype=np.int64))


class Segment:
    """An opened segment: ids in memory, raw vectors memory-mapped, the index loaded. Immutable, thread-safe."""

    def __init__(self, folder: Path, info: SegmentInfo) -> None:
        self.folder = folder
        self.info = info
        self.ids: np.ndarray = np.load(folder / IDS_FILE)
        self.raw: np.ndarray = np.load(folder / VECTORS_FILE, mmap_mode="r")
        self._tuning = SearchTuning(**info.tuning) if info.tuning else SearchTuning()
        self._gpu = GpuReplica()
        self._loaded: faiss.Index | None = None  # opened on the first search: a writer never needs it
        self._lock = threading.Lock()

    @classmethod
    def open(cls, directory: Path, name: str) -> Segment:
        folder = directory / name
        info = json.loads((folder / INFO_FILE).read_text())
        return cls(folder, SegmentInfo(**info))

    @property
    def kind(self) -> IndexKind:
        return self.info.kind

    @property
    def _index(self) -> faiss.Index:
        """The FAISS index: read from its file, or for a flat segment made from the raw vectors as float32."""
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    if self.info.kind is IndexKind.FLAT:
                        index = faiss.IndexFlatIP(self.raw.shape[1])
                        if len(self.raw):
                            index.add(np.ascontiguousarray(self.raw, dtype=np.float32))
                    else:
                        index = faiss.read_index(str(self.folder / INDEX_FILE))
                    self._loaded = index
        return self._loaded

    def warm(self) -> None:
        """Open the index now (readers do, in the background loader, so no request pays for it)."""
        _ = self._index

    @property
    def tuning(self) -> SearchTuning:
        return self._tuning

    def rows_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mask over ``ids`` of those held here, their row numbers)."""
        if len(self.ids) == 0 or len(ids) == 0:
            return np.zeros(len(ids), dtype=bool), np.zeros(0, dtype=np.int64)
        positions = np.searchsorted(self.ids, ids)
        positions = np.minimum(positions, len(self.ids) - 1)
        held = self.ids[positions] == ids
        return held, positions[held]

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """The raw vectors of ``rows`` as float32 (exact: never decoded from a compressed index)."""
        return np.asarray(self.raw[rows], dtype=np.float32)

    def search(
        self, queries: np.ndarray, k: int, *, alive: np.ndarray | None, exact: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, catalog ids) per query among the rows ``alive`` (a bool mask; ``None``: all).

        ``exact``: score the alive rows directly from the raw vectors (for selective filters on ANN segments).
        """
        count = len(self.ids)
        k = min(k, count)
        if k == 0 or (alive is not None and not alive.any()):
            return _empty(len(queries), max(k, 1))
        if exact and alive is not None and self.kind is not IndexKind.FLAT:
            rows = np.flatnonzero(alive)
            scores, found = faiss.knn(queries, self.vectors(rows), min(k, len(rows)), metric=faiss.METRIC_INNER_PRODUCT)
            return scores, np.where(found >= 0, self.ids[rows[np.maximum(found, 0)]], -1)
        if alive is None and self.kind is not IndexKind.HNSW:
            on_gpu = self._gpu.search(self._index, 0, self._tuning, queries, k)
            if on_gpu is not None:
                return self._labelled(*on_gpu)
        selector = None
        if alive is not None:
            bits = np.packbits(alive, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(alive), faiss.swig_ptr(bits))
            selector.referenced = bits  # the selector reads the array: keep it alive with it
        params = search_parameters(self._index, self._tuning, selector)
        scores, labels = self._index.search(queries, k, params=params.params)
        return self._labelled(scores, labels)

    def _labelled(self, scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return scores, np.where(labels >= 0, self.ids[np.maximum(labels, 0)], -1)


def _empty(queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((queries, k), -np.inf, dtype=np.float32), np.full((queries, k), -1, dtype=np.int64)
