"""One FAISS index per space, saved atomically beside a small JSON header.

Vectors are L2-normalised float32 and compared by inner product (cosine). Their ids are the catalog's
embedding ids, so a search hit maps straight back to a catalog row.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import faiss
import numpy as np

from xmodal.errors import SpaceMismatchError

INDEX_FILE = "index.faiss"
HEADER_FILE = "space.json"


@dataclass(frozen=True, slots=True)
class SpaceHeader:
    """What a saved index remembers about the model that made its vectors."""

    name: str
    encoder_spec: str
    fingerprint: str
    dim: int
    metric: str = "ip"
    # Inner products between random pairs of stored vectors, measured at each save: fusion turns a raw score
    # into "how many standard deviations above chance" with them, so spaces of different models compare.
    score_mean: float = 0.0
    score_std: float = 1.0


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


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


class VectorIndex:
    """A space's vectors: add, remove, search, reconstruct, save. Thread-safe."""

    def __init__(self, directory: Path, header: SpaceHeader, index: faiss.Index) -> None:
        self.directory = directory
        self.header = header
        self._index = index
        self._lock = threading.RLock()
        self._dirty = False

    @classmethod
    def create(cls, directory: Path, header: SpaceHeader) -> VectorIndex:
        """An empty exact (flat inner-product) index with explicit ids."""
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(header.dim))
        return cls(directory, header, index)

    @classmethod
    def load(cls, directory: Path) -> VectorIndex | None:
        """The index saved in ``directory``, or ``None`` if there is none yet."""
        header_path = directory / HEADER_FILE
        if not header_path.is_file():
            return None
        fields = json.loads(header_path.read_text())
        header = SpaceHeader(**fields)
        index_path = directory / INDEX_FILE
        if index_path.is_file():
            index = faiss.read_index(str(index_path))
        else:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(header.dim))
        loaded = cls(directory, header, index)
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
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        """Every vector id held, as int64."""
        with self._lock:
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def search(
        self, queries: np.ndarray, k: int, params: faiss.SearchParameters | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query row (a single vector is one row); missing slots have id -1.

        ``params`` may carry an id selector that restricts the search to some vector ids.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        with self._lock:
            k = max(1, min(k, self.ntotal)) if self.ntotal else 1
            return self._index.search(queries, k, params=params)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` (each must be present)."""
        with self._lock:
            return (
                np.stack([self._index.reconstruct(int(i)) for i in ids])
                if len(ids)
                else np.zeros((0, self.header.dim), dtype=np.float32)
            )

    # writing ---------------------------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape[1] != self.header.dim:
            raise ValueError(f"space {self.header.name} holds {self.header.dim}-d vectors, got {vectors.shape[1]}")
        with self._lock:
            self._index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
            self._dirty = True

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids``; returns how many were present."""
        if len(ids) == 0:
            return 0
        with self._lock:
            removed = int(self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))
            self._dirty = self._dirty or removed > 0
            return removed

    def save(self) -> None:
        """Write header and index to temporary files, then rename them into place (re-calibrating scores)."""
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            mean, std = calibrate(self._sample(CALIBRATION_PAIRS * 2))
            self.header = replace(self.header, score_mean=mean, score_std=std)
            _atomic_write_bytes(self.directory / HEADER_FILE, json.dumps(asdict(self.header), indent=2).encode())
            _atomic_write_bytes(self.directory / INDEX_FILE, faiss.serialize_index(self._index).tobytes())
            self._dirty = False

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
