"""A reader's view of a space: one published manifest with its segments opened. Immutable.

Every search of a request runs against one snapshot, so a publication in the middle of a request changes nothing
it sees. Ids the snapshot does not hold (catalog rows newer than the publication, or deleted ones) are simply not
there: searches never return them and :meth:`SpaceSnapshot.vectors_of` leaves them out, never raising.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from xmodal.errors import SpaceMismatchError
from xmodal.store.ann import IndexKind, SearchTuning
from xmodal.store.manifest import SEGMENTS_DIR, Manifest, read_tombstones
from xmodal.store.segments import Segment, unique_ids


class SpaceSnapshot:
    """The segments and deletions of one manifest. Open with :meth:`open` (reusing already opened segments)."""

    def __init__(self, directory: Path, manifest: Manifest, segments: list[Segment], tombstones: np.ndarray) -> None:
        self.directory = directory
        self.manifest = manifest
        self.segments = segments
        self.deleted = unique_ids(np.asarray(tombstones, dtype=np.int64))
        # per segment: a mask of its live rows, or None when none of its rows is deleted
        self._alive: list[np.ndarray | None] = []
        for segment in segments:
            dead = np.isin(segment.ids, self.deleted) if len(self.deleted) else None
            self._alive.append(~dead if dead is not None and dead.any() else None)
        pairs = zip(segments, self._alive, strict=True)
        self._live = sum(s.info.count if a is None else int(a.sum()) for s, a in pairs)

    @classmethod
    def open(cls, directory: Path, manifest: Manifest, opened: Mapping[str, Segment] | None = None) -> SpaceSnapshot:
        """Open ``manifest``'s segments; those in ``opened`` (from the previous snapshot) are reused as they are."""
        opened = opened or {}
        segments = [
            opened.get(info.name) or Segment.open(directory / SEGMENTS_DIR, info.name) for info in manifest.segments
        ]
        for segment in segments:
            segment.warm()  # the loader pays for opening indexes, not the first request
        return cls(directory, manifest, segments, read_tombstones(directory, manifest))

    # what it holds ---------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.manifest.space

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def ntotal(self) -> int:
        """Live vectors (deleted ones not counted)."""
        return self._live

    @property
    def tombstones(self) -> int:
        """Deleted vectors the segments still hold until they are merged."""
        return sum(0 if a is None else int((~a).sum()) for a in self._alive)

    @property
    def index_key(self) -> str:
        """The index of the largest segment (what most of the space is searched with)."""
        if not self.segments:
            return "Flat"
        largest = max(self.segments, key=lambda s: s.info.count)
        return largest.info.index_key

    @property
    def kind(self) -> IndexKind:
        if not self.segments:
            return IndexKind.FLAT
        return max(self.segments, key=lambda s: s.info.count).kind

    @property
    def exhaustive(self) -> bool:
        """Whether a search scans every vector (only flat segments): its scores are the exact inner products and
        an item's best vector is among the hits whenever any of its vectors is. HNSW scores are exact too, but the
        graph can miss an item's best chunk; IVF-PQ scores are estimates."""
        return all(segment.kind is IndexKind.FLAT for segment in self.segments)

    @property
    def tuning(self) -> SearchTuning:
        if not self.segments:
            return SearchTuning()
        return max(self.segments, key=lambda s: s.info.count).tuning

    def check_compatible(self, encoder_spec: str, fingerprint: str) -> None:
        """Raise ``SpaceMismatchError`` unless the vectors came from the model with ``fingerprint``."""
        if fingerprint != self.manifest.fingerprint:
            raise SpaceMismatchError(
                f"Space '{self.name}' holds vectors made by '{self.manifest.encoder_spec}' "
                f"(model fingerprint {self.manifest.fingerprint}), but the configured encoder '{encoder_spec}' "
                f"is a different model (fingerprint {fingerprint}); its vectors would not be comparable.\n"
                f"Either configure the original encoder again; or move the space to the new model while it keeps "
                f"answering: `xmodal spaces switch {self.name} --to '{encoder_spec}'` with the original configured, "
                f"then `xmodal index ...`; or drop the space and re-index: `xmodal spaces drop {self.name}`."
            )

    def calibrated(self, scores: np.ndarray) -> np.ndarray:
        """Raw inner products as standard deviations above the score of a random pair."""
        return (np.asarray(scores, dtype=np.float64) - self.manifest.score_mean) / self.manifest.score_std

    def ids(self) -> np.ndarray:
        """Every live vector id, ascending."""
        parts = [s.ids if a is None else s.ids[a] for s, a in zip(self.segments, self._alive, strict=True)]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, raw vectors as float32) of every live vector."""
        ids, vectors = [], []
        for segment, alive in zip(self.segments, self._alive, strict=True):
            rows = np.arange(segment.info.count) if alive is None else np.flatnonzero(alive)
            ids.append(segment.ids[rows])
            vectors.append(segment.vectors(rows))
        if not ids:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(ids), np.concatenate(vectors)

    def vectors_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the ``ids`` this snapshot holds alive, their raw vectors), in the order of ``ids``; others are left out."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        found = np.zeros(len(ids), dtype=bool)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        for segment, alive in zip(self.segments, self._alive, strict=True):
            if not len(ids) or segment.info.count == 0:
                continue
            held, rows = segment.rows_of(ids)
            if alive is not None:
                live = alive[rows]
                held[np.flatnonzero(held)[~live]] = False
                rows = rows[live]
            if len(rows):
                out[held] = segment.vectors(rows)
                found |= held
        return ids[found], out[found]

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The raw vectors of ``ids``, each of which must be held (``KeyError`` otherwise)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        found, vectors = self.vectors_of(ids)
        if len(found) != len(ids):
            missing = sorted(set(ids.tolist()) - set(found.tolist()))[:5]
            raise KeyError(f"space {self.name} holds no vectors with ids {missing}")
        return vectors

    # searching -------------------------------------------------------------------------------------------

    def search(
        self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query row over every segment; missing slots have id -1.

        ``allowed`` restricts the search to those vector ids; on approximate segments that is an exact search over
        just those vectors, since graph and IVF searches lose recall when most of the space is excluded.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(k, self._live)) if self._live else 1
        allowed_sorted = unique_ids(np.asarray(allowed, dtype=np.int64)) if allowed is not None else None
        scores, labels = [], []
        for segment, alive in zip(self.segments, self._alive, strict=True):
            mask = alive
            if allowed_sorted is not None:
                if not _overlaps(segment, allowed_sorted):
                    continue
                inside = _held_rows(segment, allowed_sorted)
                mask = inside if mask is None else (mask & inside)
            found_scores, found_ids = segment.search(queries, k, alive=mask, exact=allowed_sorted is not None)
            scores.append(found_scores)
            labels.append(found_ids)
        if not scores:
            return np.full((len(queries), k), -np.inf, dtype=np.float32), np.full((len(queries), k), -1, np.int64)
        return _merge_top_k(np.concatenate(scores, axis=1), np.concatenate(labels, axis=1), k)


def _merge_top_k(scores: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best (score, label) pairs of each row, best first; empty slots (-1) sort last."""
    scores = np.where(labels >= 0, scores, -np.inf)
    if scores.shape[1] > k:
        keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores, labels = np.take_along_axis(scores, keep, 1), np.take_along_axis(labels, keep, 1)
    order = np.argsort(-scores, axis=1, kind="stable")
    scores, labels = np.take_along_axis(scores, order, 1), np.take_along_axis(labels, order, 1)
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        labels = np.pad(labels, ((0, 0), (0, pad)), constant_values=-1)
    return scores.astype(np.float32), labels


def _held_rows(segment: Segment, allowed: np.ndarray) -> np.ndarray:
    """A mask over the segment's rows of the ascending ``allowed`` ids it holds: a binary search per allowed id,
    not a pass over every id of the segment."""
    low = np.searchsorted(allowed, segment.info.min_id, side="left")
    high = np.searchsorted(allowed, segment.info.max_id, side="right")
    _, rows = segment.rows_of(allowed[low:high])
    mask = np.zeros(len(segment.ids), dtype=bool)
    mask[rows] = True
    return mask


def _overlaps(segment: Segment, ids: np.ndarray) -> bool:
    """Whether any of the ascending ``ids`` falls in the segment's id range."""
    return bool(len(ids)) and ids[0] <= segment.info.max_id and ids[-1] >= segment.info.min_id
