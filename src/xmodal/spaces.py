"""A vector space at run time: its encoder, its FAISS index and the catalog rows behind the ids.

This is where the two halves of the store meet the encoders; the indexer writes through it and the search
reads through it.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from xmodal.config import Settings
from xmodal.encoders import Encoder, build_encoder
from xmodal.modality import Modality
from xmodal.store.ann import IndexPolicy
from xmodal.store.catalog import Catalog
from xmodal.store.vectors import SpaceHeader, VectorIndex, current_version

log = logging.getLogger(__name__)

EncoderBuilder = Callable[[str, Settings], Encoder]


def index_policy(settings: Settings) -> IndexPolicy:
    """The settings' ``index_*`` fields as the store's index policy."""
    return IndexPolicy(
        exact_below=settings.index_exact_below,
        ivf_above=settings.index_ivf_above,
        memory_budget_bytes=int(settings.index_memory_budget),
        hnsw_m=settings.index_hnsw_m,
        target_recall=settings.index_target_recall,
        tune_queries=settings.index_tune_queries,
        compact_ratio=settings.index_compact_ratio,
    )


class VectorSpace:
    """One named space. The index is opened lazily and checked against the encoder's fingerprint."""

    def __init__(
        self, name: str, encoder: Encoder, directory: Path, catalog: Catalog, policy: IndexPolicy | None = None
    ) -> None:
        self.name = name
        self.encoder = encoder
        self.directory = directory
        self.catalog = catalog
        self.policy = policy or IndexPolicy()
        self._index: VectorIndex | None = None
        self._loaded_version: Path | None = None
        self._checked = False
        self._lock = threading.Lock()

    def embeds(self, modality: Modality) -> bool:
        return modality in self.encoder.modalities

    def stored_index(self) -> VectorIndex | None:
        """The saved index as it is, without loading the encoder (``None`` before the first vector)."""
        with self._lock:
            if self._index is None:
                self._loaded_version = current_version(self.directory)
                self._index = VectorIndex.load(self.directory, self.policy)
            return self._index

    def refresh(self) -> bool:
        """Pick up a newer saved index (another process indexed and published one); True if it did.

        Indexes are published by an atomic rename, so a reader sees the old file or the new one, never half of
        one; queries already running keep the index object they started with.
        """
        with self._lock:
            if self._index is None or self._index.dirty:
                return False  # not loaded yet, or this process is the one writing
            version = current_version(self.directory)
            if version == self._loaded_version or version is None:
                return False
            fresh = VectorIndex.load(self.directory, self.policy)
            if fresh is None:
                return False
            self._index, self._loaded_version = fresh, version
            return True

    def checked_index(self) -> VectorIndex:
        """The index, created if needed, after checking that it was built by this space's encoder."""
        index = self.stored_index()
        with self._lock:
            if index is None:
                header = SpaceHeader(self.name, self.encoder.spec, self.encoder.fingerprint, self.encoder.dim)
                self._index = index = VectorIndex.create(self.directory, header, self.policy)
                self.catalog.save_space(
                    name=self.name,
                    encoder_spec=header.encoder_spec,
                    dim=header.dim,
                    fingerprint=header.fingerprint,
                )
                self._checked = True
            elif not self._checked:
                fingerprint, stored = self.encoder.fingerprint, index.header.fingerprint
                if stored != fingerprint and self.encoder.accepts_fingerprint(stored):
                    # made before fingerprints hashed bytes, by these same weights: the next save stores the new one
                    index.header = replace(index.header, fingerprint=fingerprint)
                index.check_compatible(self.encoder.spec, fingerprint)
                self._checked = True
            return index

    @property
    def size(self) -> int:
        index = self.stored_index()
        return index.ntotal if index else 0

    def save(self) -> None:
        if self._index is not None and self._index.dirty:
            self._index.save()

    def reconcile(self) -> int:
        """Make the catalog and the index agree id for id after an interrupted run; returns the fixes made.

        Vectors without a catalog row leave the index; catalog rows without a vector are deleted, so the
        items they belong to are embedded again by the next run.
        """
        index = self.stored_index()
        in_catalog = np.asarray(self.catalog.vector_ids(self.name), dtype=np.int64)
        in_index = index.ids() if index is not None else np.zeros(0, dtype=np.int64)
        orphan_vectors = np.setdiff1d(in_index, in_catalog)
        orphan_rows = np.setdiff1d(in_catalog, in_index)
        if index is not None and len(orphan_vectors):
            index.remove(orphan_vectors)
            index.save()
        if len(orphan_rows):
            self.catalog.delete_embeddings(self.name, orphan_rows.tolist())
        if len(orphan_vectors) or len(orphan_rows):
            log.warning(
                "space %s: repaired %d orphan vectors and %d orphan rows after an interrupted run",
                self.name,
                len(orphan_vectors),
                len(orphan_rows),
            )
        return int(len(orphan_vectors) + len(orphan_rows))

    def drop(self) -> int:
        """Delete the space's vectors and catalog rows; returns how many embeddings went."""
        with self._lock:
            count = self.catalog.drop_space(self.name)
            shutil.rmtree(self.directory, ignore_errors=True)
            self._index, self._checked = None, False
        return count


class SpaceSet:
    """Every space the settings define, by name."""

    def __init__(self, spaces: dict[str, VectorSpace]) -> None:
        self._spaces = spaces

    @classmethod
    def from_settings(cls, settings: Settings, catalog: Catalog, build: EncoderBuilder = build_encoder) -> SpaceSet:
        """The settings' spaces; ``build`` makes each encoder (tests pass one that shares loaded models)."""
        policy = index_policy(settings)
        return cls(
            {
                name: VectorSpace(name, build(spec, settings), settings.spaces_dir / name, catalog, policy)
                for name, spec in settings.space_encoders().items()
            }
        )

    def __iter__(self) -> Iterator[VectorSpace]:
        return iter(self._spaces.values())

    def __contains__(self, name: object) -> bool:
        return name in self._spaces

    def __getitem__(self, name: str) -> VectorSpace:
        return self._spaces[name]

    def names(self) -> list[str]:
        return list(self._spaces)

    def save(self) -> None:
        for space in self:
            space.save()

    def remove_vectors(self, by_space: Mapping[str, Sequence[int]]) -> None:
        """Take these vector ids (per space name) out of the indexes; spaces not open here hold none of them."""
        for name, ids in by_space.items():
            index = self._spaces[name].stored_index() if name in self._spaces else None
            if index is not None:
                index.remove(np.asarray(ids, dtype=np.int64))

    def refresh(self) -> None:
        """Pick up indexes another process published since they were loaded."""
        for space in self:
            space.refresh()
