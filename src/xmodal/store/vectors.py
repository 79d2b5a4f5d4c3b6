"""One FAISS index per space, published as versions beside a small JSON header.

Vectors are L2-normalised float32 and compared by inner product (cosine). Their ids are the catalog's
embedding ids, so a search hit maps straight back to a catalog row. The index type follows the space's size
(:mod:`xmodal.store.ann`); graph and IVF indexes cannot drop vectors cheaply, so removed ids become tombstones
that every search skips until a compaction rebuilds the index without them.

On disk a space is a folder of versions and a ``current`` link::

    spaces/clip/current -> v1764300000000000000
    spaces/clip/v1764300000000000000/{space.json, index.faiss, tombstones.npy}

A save writes a new version folder, then switches ``current`` with one atomic rename, so a reader sees the old
version or the new one, never a mix; the version before stays for readers still opening it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import faiss
import numpy as np

from xmodal.errors import SpaceMismatchError
from xmodal.store.ann import (
    TUNE_K,
    GpuReplica,
    IndexKind,
    IndexPlan,
    IndexPolicy,
    SearchTuning,
    choose_index,
    empty_index,
    kind_of,
    search_parameters,
    tune,
)

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
HEADER_FILE = "space.json"
TOMBSTONES_FILE = "tombstones.npy"
CURRENT_LINK = "current"
_KEEP_VERSIONS = 2  # the current one and the one before, for readers still loading it


@dataclass(frozen=True, slots=True)
class SpaceHeader:
    """What a saved index remembers about the model that made its vectors and how to search it."""

    name: str
    encoder_spec: str
    fingerprint: str
    dim: int
    metric: str = "ip"
    # Inner products between random pairs of stored vectors, measured at each save: fusion turns a raw score
    # into "how many standard deviations above chance" with them, so spaces of different models compare.
    score_mean: float = 0.0
    score_std: float = 1.0
    index_key: str = "Flat"
    tuning: dict[str, float | int | None] = field(default_factory=dict)


CALIBRATION_PAIRS = 2000


def calibrate(vectors: np.ndarray, *, pairs: int = CALIBRATION_PAIRS, seed: int = 0) -> tuple[float, float]:
    """(mean, std) of inner products between random pairs of distinct rows of ``vectors``."""
    count = len(vectors)
    if count < 2:
        return 0.0, 1.0
    rng = np.random.default_rng(seed)
    left = rng.integers(0, count, size=pairs)
    right = (left + rng.integers(1, count, size=pairs)) % count  # never the same row
    scores = np.einsum("ij,ij->i", vectors[left], vectors[right])
    return float(scores.mean()), float(max(scores.std(), 1e-3))


def current_version(directory: Path) -> Path | None:
    """The folder of the published version of a space (``None`` before the first save)."""
    link = directory / CURRENT_LINK
    if link.is_dir():
        return link.resolve()
    if (directory / HEADER_FILE).is_file():  # saved before versions existed
        return directory
    return None


def _publish(directory: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` into a new version folder and point ``current`` at it atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    version = Path(tempfile.mkdtemp(dir=directory, prefix=f"v{time.time_ns()}-"))
    for name, data in files.items():
        with open(version / name, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    link = directory / f".{CURRENT_LINK}.{version.name}"
    os.symlink(version.name, link)
    os.replace(link, directory / CURRENT_LINK)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    _drop_old_versions(directory, version)
    return version


def _drop_old_versions(directory: Path, current: Path) -> None:
    versions = sorted(p for p in directory.iterdir() if p.is_dir() and not p.is_symlink() and p.name.startswith("v"))
    for stale in [v for v in versions if v != current][: max(0, len(versions) - _KEEP_VERSIONS)]:
        shutil.rmtree(stale, ignore_errors=True)
    for legacy in (HEADER_FILE, INDEX_FILE):
        (directory / legacy).unlink(missing_ok=True)


class VectorIndex:
    """A space's vectors: add, remove, search, reconstruct, save. Thread-safe."""

    def __init__(
        self,
        directory: Path,
        header: SpaceHeader,
        index: faiss.Index,
        *,
        policy: IndexPolicy | None = None,
        tombstones: np.ndarray | None = None,
    ) -> None:
        self.directory = directory
        self.header = header
        self.policy = policy or IndexPolicy()
        self._index = index
        self._tombstones: set[int] = set((tombstones if tombstones is not None else np.zeros(0)).tolist())
        self._tuning = SearchTuning(**header.tuning) if header.tuning else SearchTuning()
        self._lock = threading.RLock()
        self._dirty = False
        self._version = 0  # bumped by every change, so a GPU copy knows when it is stale
        self._gpu = GpuReplica()

    @classmethod
    def create(cls, directory: Path, header: SpaceHeader, policy: IndexPolicy | None = None) -> VectorIndex:
        """An empty exact (flat inner-product) index with explicit ids; it changes type as it grows."""
        return cls(
            directory,
            replace(header, index_key="Flat"),
            faiss.IndexIDMap2(faiss.IndexFlatIP(header.dim)),
            policy=policy,
        )

    @classmethod
    def load(cls, directory: Path, policy: IndexPolicy | None = None) -> VectorIndex | None:
        """The published index of ``directory``, or ``None`` if there is none yet."""
        version = current_version(directory)
        if version is None:
            return None
        fields = json.loads((version / HEADER_FILE).read_text())
        header = SpaceHeader(**fields)
        index_path = version / INDEX_FILE
        if index_path.is_file():
            index = faiss.read_index(str(index_path))
        else:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(header.dim))
        tombstones_path = version / TOMBSTONES_FILE
        tombstones = np.load(tombstones_path) if tombstones_path.is_file() else None
        loaded = cls(directory, header, index, policy=policy, tombstones=tombstones)
        if "score_std" not in fields:  # saved before calibration existed: measure it now, in memory
            mean, std = calibrate(loaded._sample(CALIBRATION_PAIRS * 2))
            loaded.header = replace(header, score_mean=mean, score_std=std)
        return loaded

    def check_compatible(self, encoder_spec: str, fingerprint: str) -> None:
        """Raise ``SpaceMismatchError`` unless the vectors came from the model with ``fingerprint``."""
        if fingerprint != self.header.fingerprint:
            raise SpaceMismatchError(
                f"Space '{self.header.name}' holds vectors made by '{self.header.encoder_spec}' "
                f"(model fingerprint {self.header.fingerprint}), but the configured encoder '{encoder_spec}' "
                f"is a different model (fingerprint {fingerprint}); its vectors would not be comparable.\n"
                f"Either configure the original encoder again, or drop the space and re-index: "
                f"`xmodal spaces drop {self.header.name}` then `xmodal index ...`."
            )

    # reading ---------------------------------------------------------------------------------------------

    @property
    def kind(self) -> IndexKind:
        return kind_of(self._index)

    @property
    def tuning(self) -> SearchTuning:
        return self._tuning

    @property
    def ntotal(self) -> int:
        """Live vectors (tombstoned ones not counted)."""
        return int(self._index.ntotal) - len(self._tombstones)

    @property
    def tombstones(self) -> int:
        return len(self._tombstones)

    def ids(self) -> np.ndarray:
        """Every live vector id, as int64."""
        with self._lock:
            ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            if self._tombstones:
                ids = ids[~np.isin(ids, np.fromiter(self._tombstones, dtype=np.int64))]
            return ids

    def search(
        self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query row (a single vector is one row); missing slots have id -1.

        ``allowed`` restricts the search to those vector ids. On an approximate index that is an exact search
        over just those vectors, since graph and IVF searches lose recall when most of the space is excluded.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        with self._lock:
            live = self.ntotal
            k = max(1, min(k, live)) if live else 1
            if allowed is not None and self.kind is not IndexKind.FLAT:
                return self._exact_within(queries, k, np.asarray(allowed, dtype=np.int64))
            if allowed is None and not self._tombstones and not self._dirty:
                on_gpu = self._gpu.search(self._index, self._version, self._tuning, queries, k)
                if on_gpu is not None:
                    return on_gpu
            selector = self._selector(allowed)
            params = search_parameters(self._index, self._tuning, selector)
            return self._index.search(queries, k, params=params.params)

    def _selector(self, allowed: np.ndarray | None) -> faiss.IDSelector | None:
        if allowed is not None:
            return faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        if not self._tombstones:
            return None
        dead = faiss.IDSelectorBatch(np.fromiter(self._tombstones, dtype=np.int64))
        selector = faiss.IDSelectorNot(dead)
        selector.referenced = dead  # keep the inner selector alive as long as the outer one
        return selector

    def _exact_within(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        present = allowed[np.isin(allowed, self.ids())]
        if len(present) == 0:
            return np.full((len(queries), k), -np.inf, dtype=np.float32), np.full((len(queries), k), -1)
        vectors = self.reconstruct(present)
        scores, rows = faiss.knn(queries, vectors, min(k, len(present)), metric=faiss.METRIC_INNER_PRODUCT)
        return scores, present[rows]

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` (each must be present; approximate on an IVF-PQ index)."""
        with self._lock:
            return (
                np.stack([self._index.reconstruct(int(i)) for i in ids])
                if len(ids)
                else np.zeros((0, self.header.dim), dtype=np.float32)
            )

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of every live vector."""
        with self._lock:
            ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            inner = faiss.downcast_index(self._index.index)
            if isinstance(inner, faiss.IndexHNSW):
                inner = faiss.downcast_index(inner.storage)
            if isinstance(inner, faiss.IndexFlat):
                vectors = faiss.rev_swig_ptr(inner.get_xb(), inner.ntotal * inner.d).reshape(inner.ntotal, inner.d)
                vectors = np.array(vectors)
            else:
                vectors = self._index.index.reconstruct_n(0, self._index.ntotal)
            if self._tombstones:
                keep = ~np.isin(ids, np.fromiter(self._tombstones, dtype=np.int64))
                ids, vectors = ids[keep], vectors[keep]
            return ids, vectors

    # writing ---------------------------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if vectors.shape[1] != self.header.dim:
            raise ValueError(f"space {self.header.name} holds {self.header.dim}-d vectors, got {vectors.shape[1]}")
        with self._lock:
            if self._tombstones and not self._tombstones.isdisjoint(ids.tolist()):
                self._rebuild(self._plan_for(self.ntotal))  # an id is being reused: drop its old vector first
            self._index.add_with_ids(vectors, ids)
            self._dirty = True
            self._version += 1

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids``; returns how many were present."""
        if len(ids) == 0:
            return 0
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        with self._lock:
            if self.kind is IndexKind.FLAT:
                removed = int(self._index.remove_ids(ids))
            else:
                present = set(ids[np.isin(ids, self.ids())].tolist())
                self._tombstones |= present
                removed = len(present)
            self._dirty = self._dirty or removed > 0
            self._version += removed > 0
            return removed

    def save(self) -> None:
        """Restructure if the size calls for it, re-calibrate, and publish a new version."""
        with self._lock:
            self._restructure()
            mean, std = calibrate(self._sample(CALIBRATION_PAIRS * 2))
            self.header = replace(
                self.header, score_mean=mean, score_std=std, index_key=self._plan_key(), tuning=self._tuning.as_dict()
            )
            tombstones = np.fromiter(sorted(self._tombstones), dtype=np.int64)
            buffer = _npy_bytes(tombstones)
            _publish(
                self.directory,
                {
                    INDEX_FILE: faiss.serialize_index(self._index).tobytes(),
                    TOMBSTONES_FILE: buffer,
                    HEADER_FILE: json.dumps(asdict(self.header), indent=2).encode(),
                },
            )
            self._dirty = False

    def retune(self) -> SearchTuning:
        """Rebuild the index as it is and tune its search effort again (to the policy's target recall)."""
        with self._lock:
            self._rebuild(None)
            return self._tuning

    def _plan_for(self, count: int) -> IndexPlan:
        return choose_index(count, self.header.dim, self.policy)

    def _plan_key(self) -> str:
        if self.kind is IndexKind.FLAT:
            return "Flat"
        return self.header.index_key if self.header.index_key != "Flat" else self._plan_for(self.ntotal).key

    def _restructure(self) -> None:
        live = self.ntotal
        wanted = self._plan_for(live)
        order = list(IndexKind)
        current = self.kind
        grew = order.index(wanted.kind) > order.index(current)
        # shrink only well below the threshold, so a space near it does not flip type on every run
        shrank = order.index(self._plan_for(2 * live).kind) < order.index(current)
        compact = bool(self._tombstones) and len(self._tombstones) > self.policy.compact_ratio * max(1, live)
        stale_tuning = self.kind is not IndexKind.FLAT and (
            self._tuning.tuned_at == 0
            or live >= 2 * self._tuning.tuned_at
            or self._tuning.target_recall != self.policy.target_recall
        )
        if grew or shrank:
            self._rebuild(wanted)
        elif compact or stale_tuning:  # tuning needs held-out queries, so it goes with a rebuild
            self._rebuild(None)

    def _rebuild(self, plan: IndexPlan | None) -> None:
        """Rebuild from the live vectors as ``plan`` (``None``: the same type and key), dropping tombstones."""
        started = time.perf_counter()
        ids, vectors = self.vectors()
        if plan is None:
            plan = IndexPlan(self.kind, self._plan_key(), 0)
        training = None
        if plan.kind is IndexKind.IVFPQ:
            sample = np.random.default_rng(0).choice(
                len(ids), size=min(len(ids), self.policy.train_sample), replace=False
            )
            training = vectors[np.sort(sample)]
        index = empty_index(plan, self.header.dim, self.policy, training)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        # Tuning queries are held out: added only after the search effort is tuned on them.
        held_out = np.zeros(len(ids), dtype=bool)
        if plan.kind is not IndexKind.FLAT and len(ids) > 10 * TUNE_K:
            count = min(self.policy.tune_queries, len(ids) // 10)
            held_out[np.random.default_rng(1).choice(len(ids), size=count, replace=False)] = True
        index.add_with_ids(vectors[~held_out], ids[~held_out])
        tuning = SearchTuning()
        if plan.kind is not IndexKind.FLAT:
            tuning = tune(
                index, vectors[~held_out], ids[~held_out], vectors[held_out], target_recall=self.policy.target_recall
            )
        if held_out.any():
            index.add_with_ids(vectors[held_out], ids[held_out])
        tuning.tuned_at = int(index.ntotal)
        self._index, self._tombstones, self._tuning = index, set(), tuning
        self._version += 1
        self.header = replace(self.header, index_key=plan.key)
        self._dirty = True
        log.info(
            "space %s: built a %s index over %d vectors in %.1f s",
            self.header.name,
            plan.key,
            len(ids),
            time.perf_counter() - started,
        )

    def _sample(self, count: int, seed: int = 0) -> np.ndarray:
        ids = self.ids()
        if len(ids) > count:
            ids = np.random.default_rng(seed).choice(ids, size=count, replace=False)
        return self.reconstruct(np.sort(ids))

    def calibrated(self, scores: np.ndarray) -> np.ndarray:
        """Raw inner products as standard deviations above the score of a random pair."""
        return (np.asarray(scores, dtype=np.float64) - self.header.score_mean) / self.header.score_std

    @property
    def dirty(self) -> bool:
        return self._dirty


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
