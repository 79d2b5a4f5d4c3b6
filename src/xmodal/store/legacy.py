"""Homes written before segments: one FAISS file per published version, beside a JSON header.

``spaces/<name>/current -> v<time>/{space.json, index.faiss, tombstones.npy}`` (or, older still, ``space.json`` and
``index.faiss`` in the space folder itself). :func:`read_legacy` reads such a space's live vectors once, so the
writer can publish them as the first segment of a version-2 space; :func:`remove_legacy` then deletes the old files.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

_CURRENT = "current"
_HEADER = "space.json"
_INDEX = "index.faiss"
_TOMBSTONES = "tombstones.npy"


@dataclass(frozen=True, slots=True)
class LegacySpace:
    encoder_spec: str
    fingerprint: str
    dim: int
    ids: np.ndarray
    vectors: np.ndarray


def _version(directory: Path) -> Path | None:
    link = directory / _CURRENT
    if link.is_dir():
        return link.resolve()
    if (directory / _HEADER).is_file():
        return directory
    return None


def has_legacy(directory: Path) -> bool:
    return _version(directory) is not None


def read_legacy(directory: Path) -> LegacySpace | None:
    """The live ids and vectors of an old-layout space (vectors of an IVF-PQ index are its decoded codes: the
    originals were never kept), or ``None`` if ``directory`` holds none."""
    version = _version(directory)
    if version is None:
        return None
    header = json.loads((version / _HEADER).read_text())
    dim = int(header["dim"])
    ids = np.zeros(0, dtype=np.int64)
    vectors = np.zeros((0, dim), dtype=np.float32)
    if (version / _INDEX).is_file():
        stored = faiss.read_index(str(version / _INDEX))  # owns the index: keep it while its views are used
        index = faiss.downcast_index(stored)
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexHNSW):
            inner = faiss.downcast_index(inner.storage)
        vectors = inner.reconstruct_n(0, inner.ntotal) if inner.ntotal else vectors
    if (version / _TOMBSTONES).is_file():
        keep = ~np.isin(ids, np.load(version / _TOMBSTONES))
        ids, vectors = ids[keep], vectors[keep]
    return LegacySpace(header["encoder_spec"], header["fingerprint"], dim, ids, np.asarray(vectors, np.float32))


def remove_legacy(directory: Path) -> None:
    (directory / _CURRENT).unlink(missing_ok=True)
    for path in directory.iterdir():
        if path.is_dir() and path.name.startswith("v") and (path / _HEADER).exists():
            shutil.rmtree(path, ignore_errors=True)
    for name in (_HEADER, _INDEX, _TOMBSTONES):
        (directory / name).unlink(missing_ok=True)
