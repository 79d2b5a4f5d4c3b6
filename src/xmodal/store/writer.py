"""The one writer of a space: buffers added vectors and deletions, and publishes them as a new manifest.

Only the process that holds the home's writer lock (the indexer, ``spaces drop``, a delete run from the CLI) opens
a writer. A publication writes the buffered vectors as one new segment (its cost is the batch, not the space),
applies deletions as tombstones, merges segments as the :class:`~xmodal.store.merge_policy.MergePolicy` says, and
renames a new manifest into place. Deletions queued in the catalog by other processes (an HTTP delete) are applied
by the next publication, and leave the queue only after it.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from xmodal.store.ann import IndexPolicy, choose_index
from xmodal.store.manifest import (
    SEGMENTS_DIR,
    Manifest,
    publish,
    read_manifest,
    read_tombstones,
    write_tombstones,
)
from xmodal.store.merge_policy import MergePolicy, SegmentSize
from xmodal.store.segments import Segment, SegmentInfo, unique_ids, write_segment

log = logging.getLogger(__name__)

CALIBRATION_PAIRS = 2000


Measure = Callable[[np.ndarray, np.ndarray], dict[str, Any]]  # (sampled ids, their vectors) -> calibration


class DeletionQueue(Protocol):
    """Deletions other processes queued for this space (the catalog keeps them)."""

    def pending(self) -> tuple[np.ndarray, int | None]:
        """(vector ids queued, a mark up to which they can be cleared once applied; ``None``: nothing queued)."""
        ...

    def clear(self, upto: int) -> None:
        """Forget the queued deletions up to ``upto`` (they are published)."""
        ...


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


class SpaceWriter:
    """Adds, deletes and publishes one space's vectors. Not thread-safe: one writer thread per space."""

    def __init__(
        self,
        directory: Path,
        manifest: Manifest,
        *,
        policy: IndexPolicy,
        merges: MergePolicy,
        published: bool,
    ) -> None:
        self.directory = directory
        self.policy = policy
        self.merges = merges
        self._manifest = manifest
        self._published = published  # False until the first publication of a new space
        self._segments: dict[str, Segment] = {}
        self._tombstones = read_tombstones(directory, manifest) if published else np.zeros(0, np.int64)
        self._pending_ids: list[np.ndarray] = []
        self._pending_vectors: list[np.ndarray] = []
        self._pending_deletes: list[np.ndarray] = []
        self._counter = 0
        self._identity_changed = False

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        space: str,
        encoder_spec: str,
        fingerprint: str,
        dim: int,
        dtype: str,
        policy: IndexPolicy,
        merges: MergePolicy,
    ) -> SpaceWriter:
        """The writer of the space in ``directory``, starting from its published manifest (or an empty one)."""
        manifest = read_manifest(directory)
        if manifest is None:
            blank = Manifest(space=space, encoder_spec=encoder_spec, fingerprint=fingerprint, dim=dim, dtype=dtype)
            return cls(directory, blank, policy=policy, merges=merges, published=False)
        return cls(directory, manifest, policy=policy, merges=merges, published=True)

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @property
    def dirty(self) -> bool:
        return bool(self._pending_ids or self._pending_deletes) or not self._published or self._identity_changed

    @property
    def high_water(self) -> int:
        """The highest embedding id this space has published."""
        return self._manifest.high_water

    def adopt_fingerprint(self, fingerprint: str) -> None:
        """Record another fingerprint of the same model (a newer way of computing it) at the next publication."""
        if fingerprint != self._manifest.fingerprint:
            self._manifest = replace(self._manifest, fingerprint=fingerprint)
            self._identity_changed = True

    def needs_merge(self, *, final: bool) -> bool:
        """Whether the merge policy would merge the published segments now."""
        sizes = [SegmentSize(s.name, s.count, s.count) for s in self._manifest.segments]
        return self.merges.next_merge(sizes, final=final) is not None

    # writing ---------------------------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Buffer ``vectors`` under the (new, never used before) catalog embedding ``ids``."""
        if len(ids) == 0:
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self._manifest.dim:
            raise ValueError(f"space {self._manifest.space} holds {self._manifest.dim}-d vectors, got {vectors.shape}")
        self._pending_ids.append(np.asarray(ids, dtype=np.int64).copy())
        self._pending_vectors.append(vectors.copy())

    def remove(self, ids: np.ndarray) -> None:
        """Delete ``ids`` (buffered or published) at the next publication."""
        if len(ids):
            self._pending_deletes.append(np.asarray(ids, dtype=np.int64).copy())

    def vectors_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the ``ids`` held, published or buffered, their raw vectors), in the order of ``ids``."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        found = np.zeros(len(ids), dtype=bool)
        out = np.zeros((len(ids), self._manifest.dim), dtype=np.float32)
        for pending_ids, pending_vectors in zip(self._pending_ids, self._pending_vectors, strict=True):
            held = np.isin(ids, pending_ids)
            if held.any():
                lookup = {int(v): row for row, v in enumerate(pending_ids.tolist())}
                out[held] = pending_vectors[[lookup[int(i)] for i in ids[held]]]
                found |= held
        dead = self._tombstones
        for info in self._manifest.segments:
            if found.all():
                break
            segment = self._segment(info)
            held, rows = segment.rows_of(ids)
            fresh = ~found[held]  # of the ids this segment holds, those not found in a newer place
            held[np.flatnonzero(held)[~fresh]] = False
            if held.any():
                out[held] = segment.vectors(rows[fresh])
                found |= held
        if len(dead):
            found &= ~np.isin(ids, dead)
        return ids[found], out[found]

    def publish(
        self, deletions: DeletionQueue | None = None, *, final: bool = False, measure: Measure | None = None
    ) -> Manifest:
        """Write what is buffered as a new publication (``final``: also run merges deferred during the run).
        ``measure``: finer calibrations from a sample of the live vectors, kept in the manifest's ``calibration``
        (without it the last publication's are kept)."""
        started = time.perf_counter()
        queued, mark = deletions.pending() if deletions is not None else (np.zeros(0, np.int64), None)
        deletes = unique_ids(np.concatenate([np.zeros(0, np.int64), *self._pending_deletes, queued]))
        segments = list(self._manifest.segments)
        high_water = self._manifest.high_water
        if self._pending_ids:
            ids = np.concatenate(self._pending_ids)
            vectors = np.concatenate(self._pending_vectors)
            keep = ~np.isin(ids, deletes)
            if keep.any():
                segments.append(self._write(ids[keep], vectors[keep]))
            high_water = max(high_water, int(ids.max()))
        tombstones = self._held(np.union1d(self._tombstones, deletes), segments)
        segments, tombstones = self._merge(segments, tombstones, final=final)
        sample_ids, sample = self._sample(segments, tombstones, CALIBRATION_PAIRS * 2)
        mean, std = calibrate(sample)
        calibration = self._manifest.calibration if measure is None else measure(sample_ids, sample)
        seq = self._manifest.seq + 1
        name = (
            self._manifest.tombstones
            if np.array_equal(tombstones, self._tombstones) and self._published
            else write_tombstones(self.directory, seq, tombstones)
        )
        manifest = replace(
            self._manifest,
            seq=seq,
            segments=tuple(segments),
            tombstones=name,
            tombstone_count=len(tombstones),
            high_water=high_water,
            score_mean=mean,
            score_std=std,
            calibration=calibration,
        )
        self._manifest = publish(self.directory, manifest)
        self._published, self._identity_changed = True, False
        self._tombstones = tombstones
        self._pending_ids, self._pending_vectors, self._pending_deletes = [], [], []
        self._segments = {k: v for k, v in self._segments.items() if k in {s.name for s in segments}}
        if mark is not None and deletions is not None:
            deletions.clear(mark)
        log.debug("space %s: published #%d in %.3f s", manifest.space, seq, time.perf_counter() - started)
        return self._manifest

    # internals -------------------------------------------------------------------------------------------

    def _segment(self, info: SegmentInfo) -> Segment:
        segment = self._segments.get(info.name)
        if segment is None:
            segment = self._segments[info.name] = Segment.open(self.directory / SEGMENTS_DIR, info.name)
        return segment

    def _write(self, ids: np.ndarray, vectors: np.ndarray) -> SegmentInfo:
        self._counter += 1
        name = f"s{self._manifest.seq + 1:08d}_{self._counter:04d}"
        folder = self.directory / SEGMENTS_DIR
        shutil.rmtree(folder / name, ignore_errors=True)  # left by a writer that died before publishing it
        plan = choose_index(len(ids), self._manifest.dim, self.policy)
        return write_segment(
            folder, name, ids, vectors, plan=plan, policy=self.policy, dtype=np.dtype(self._manifest.dtype)
        )

    def _held(self, tombstones: np.ndarray, segments: list[SegmentInfo]) -> np.ndarray:
        """The ``tombstones`` that some segment holds (others need no remembering)."""
        if len(tombstones) == 0:
            return tombstones
        held = np.zeros(len(tombstones), dtype=bool)
        for info in segments:
            inside = (tombstones >= info.min_id) & (tombstones <= info.max_id) & ~held
            if inside.any():
                found, _ = self._segment(info).rows_of(tombstones[inside])
                held[np.flatnonzero(inside)[found]] = True
        return tombstones[held]

    def _merge(
        self, segments: list[SegmentInfo], tombstones: np.ndarray, *, final: bool
    ) -> tuple[list[SegmentInfo], np.ndarray]:
        while True:
            sizes = [SegmentSize(s.name, s.count, s.count - self._deleted_in(s, tombstones)) for s in segments]
            group = self.merges.next_merge(sizes, final=final)
            if group is None:
                return segments, tombstones
            started = time.perf_counter()
            chosen = [s for s in segments if s.name in group]
            ids, vectors = [], []
            for info in chosen:
                segment = self._segment(info)
                alive = ~np.isin(segment.ids, tombstones) if len(tombstones) else np.ones(info.count, bool)
                rows = np.flatnonzero(alive)
                ids.append(segment.ids[rows])
                vectors.append(segment.vectors(rows))
            merged_ids, merged_vectors = np.concatenate(ids), np.concatenate(vectors)
            rest = [s for s in segments if s.name not in group]
            if len(merged_ids):
                rest.append(self._write(merged_ids, merged_vectors))
            for info in chosen:  # their deleted ids are gone with them
                segment = self._segment(info)
                tombstones = tombstones[~np.isin(tombstones, segment.ids)]
            segments = rest
            log.info(
                "space %s: merged %d segments into %d vectors (%s) in %.1f s",
                self._manifest.space,
                len(chosen),
                len(merged_ids),
                rest[-1].index_key if len(merged_ids) else "-",
                time.perf_counter() - started,
            )

    def _deleted_in(self, info: SegmentInfo, tombstones: np.ndarray) -> int:
        inside = tombstones[(tombstones >= info.min_id) & (tombstones <= info.max_id)]
        if len(inside) == 0:
            return 0
        found, _ = self._segment(info).rows_of(inside)
        return int(found.sum())

    def _sample(self, segments: list[SegmentInfo], tombstones: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of about ``count`` live vectors drawn evenly from every segment (random rows: the cost is
        the sample)."""
        total = sum(s.count for s in segments)
        if total == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self._manifest.dim), dtype=np.float32)
        rng = np.random.default_rng(0)
        ids, parts = [], []
        for info in segments:
            take = min(info.count, max(1, round(count * info.count / total)))
            segment = self._segment(info)
            rows = np.sort(rng.choice(info.count, size=take, replace=False))
            if len(tombstones):
                rows = rows[~np.isin(segment.ids[rows], tombstones)]
            ids.append(segment.ids[rows])
            parts.append(segment.vectors(rows))
        return np.concatenate(ids), np.concatenate(parts)
