"""A space's manifest: the one file that says which segments and deletions make up the published space.

On disk::

    spaces/clip/manifest.json            the published manifest (replaced by one atomic rename)
    spaces/clip/manifests/m000042.json   the same, kept for the last few publications
    spaces/clip/tombstones/t000042.npy   deleted ids (sorted int64), written only when they changed
    spaces/clip/segments/...             immutable segments (see :mod:`xmodal.store.segments`)

What a reader is guaranteed: a manifest it reads names only segments and a tombstone file that were complete on
disk before the manifest was renamed into place, and they stay there for at least ``KEEP_MANIFESTS`` publications
after; so a reader sees one whole publication or the one before, never a mix.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.store.segments import SegmentInfo, fsync_dir, fsync_file

MANIFEST_FILE = "manifest.json"
HISTORY_DIR = "manifests"
TOMBSTONES_DIR = "tombstones"
SEGMENTS_DIR = "segments"
FORMAT = 2
KEEP_MANIFESTS = 3  # the published one and two before it, for readers still opening those


@dataclass(frozen=True, slots=True)
class Manifest:
    """One publication of a space."""

    space: str
    encoder_spec: str
    fingerprint: str
    dim: int
    seq: int = 0
    dtype: str = "float16"
    segments: tuple[SegmentInfo, ...] = ()
    tombstones: str | None = None  # file name under tombstones/, None when nothing is deleted
    tombstone_count: int = 0
    high_water: int = 0  # the highest catalog embedding id any segment holds
    # Inner products between random pairs of stored vectors: fusion turns a raw score into "how many standard
    # deviations above chance" with them, so spaces of different models compare.
    score_mean: float = 0.0
    score_std: float = 1.0
    calibration: dict[str, Any] = field(default_factory=dict)  # finer calibrations (per modality pair), if any
    metric: str = "ip"

    @property
    def count(self) -> int:
        """Vectors held in segments, deleted ones included."""
        return sum(segment.count for segment in self.segments)

    def to_json(self) -> bytes:
        data = {
            "format": FORMAT,
            "space": self.space,
            "encoder_spec": self.encoder_spec,
            "fingerprint": self.fingerprint,
            "dim": self.dim,
            "seq": self.seq,
            "dtype": self.dtype,
            "segments": [segment.as_dict() for segment in self.segments],
            "tombstones": self.tombstones,
            "tombstone_count": self.tombstone_count,
            "high_water": self.high_water,
            "score_mean": self.score_mean,
            "score_std": self.score_std,
            "calibration": self.calibration,
            "metric": self.metric,
        }
        return json.dumps(data, indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        fields = json.loads(data)
        if fields.pop("format", None) != FORMAT:
            raise ValueError("not a version-2 space manifest")
        fields["segments"] = tuple(SegmentInfo(**segment) for segment in fields["segments"])
        return cls(**fields)


def read_manifest(directory: Path) -> Manifest | None:
    """The published manifest of the space in ``directory`` (``None`` before its first publication)."""
    try:
        data = (directory / MANIFEST_FILE).read_bytes()
    except FileNotFoundError:
        return None
    return Manifest.from_json(data)


def manifest_stamp(directory: Path) -> tuple[int, int] | None:
    """A cheap token that changes whenever a new manifest is published (inode and mtime of the file)."""
    try:
        stat = os.stat(directory / MANIFEST_FILE)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def read_tombstones(directory: Path, manifest: Manifest) -> np.ndarray:
    if manifest.tombstones is None:
        return np.zeros(0, dtype=np.int64)
    return np.load(directory / TOMBSTONES_DIR / manifest.tombstones)


def write_tombstones(directory: Path, seq: int, tombstones: np.ndarray) -> str | None:
    """Write the sorted deleted ids for publication ``seq``; returns the file name (``None`` when empty)."""
    if len(tombstones) == 0:
        return None
    folder = directory / TOMBSTONES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = f"t{seq:08d}.npy"
    with open(folder / name, "wb") as handle:
        np.save(handle, np.ascontiguousarray(tombstones, dtype=np.int64))
        handle.flush()
        os.fsync(handle.fileno())
    return name


def publish(directory: Path, manifest: Manifest) -> Manifest:
    """Make ``manifest`` (with the next sequence number) the published one, atomically; returns it.

    Its segments and tombstone file must already be on disk. Files that no kept manifest names are removed.
    """
    history = directory / HISTORY_DIR
    history.mkdir(parents=True, exist_ok=True)
    data = manifest.to_json()
    fsync_file(history / f"m{manifest.seq:08d}.json", data)
    staged = directory / f".{MANIFEST_FILE}.{manifest.seq}"
    fsync_file(staged, data)
    os.replace(staged, directory / MANIFEST_FILE)
    fsync_dir(directory)
    _collect_garbage(directory)
    return manifest


def _collect_garbage(directory: Path) -> None:
    """Delete manifests beyond the last ``KEEP_MANIFESTS`` and the segments and tombstones none of those names."""
    history = directory / HISTORY_DIR
    manifests = sorted(history.glob("m*.json"))
    for stale in manifests[:-KEEP_MANIFESTS]:
        stale.unlink(missing_ok=True)
    kept = [Manifest.from_json(path.read_bytes()) for path in manifests[-KEEP_MANIFESTS:]]
    segments = {segment.name for manifest in kept for segment in manifest.segments}
    tombstones = {manifest.tombstones for manifest in kept if manifest.tombstones}
    for folder in (directory / SEGMENTS_DIR).glob("s*"):
        if folder.name not in segments and not folder.name.startswith("."):
            shutil.rmtree(folder, ignore_errors=True)
    for path in (directory / TOMBSTONES_DIR).glob("t*.npy"):
        if path.name not in tombstones:
            path.unlink(missing_ok=True)
