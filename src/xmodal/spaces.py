"""A vector space at run time: its encoder, its published segments and the catalog rows behind the ids.

This is where the two halves of the store meet the encoders; the indexer writes through it and the search
reads through it. Readers hold a :class:`~xmodal.store.snapshot.SpaceSnapshot` and swap in a newer one, loaded in
the background, when another process publishes; only the process holding the home's writer lock opens a
:class:`~xmodal.store.writer.SpaceWriter`.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from filelock import FileLock

from xmodal.config import Settings
from xmodal.encoders import Encoder, build_encoder
from xmodal.modality import Modality
from xmodal.store.ann import IndexPolicy
from xmodal.store.catalog import Catalog
from xmodal.store.legacy import has_legacy, read_legacy, remove_legacy
from xmodal.store.manifest import Manifest, manifest_stamp, read_manifest
from xmodal.store.merge_policy import MergePolicy
from xmodal.store.snapshot import SpaceSnapshot
from xmodal.store.writer import SpaceWriter

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


def merge_policy(settings: Settings) -> MergePolicy:
    """The settings' ``merge_*`` fields as the store's merge policy."""
    return MergePolicy(
        factor=settings.merge_factor,
        floor=settings.merge_floor,
        max_sync=settings.merge_max_sync,
        deleted_ratio=min(1.0, settings.index_compact_ratio),
    )


class CatalogDeletions:
    """The catalog's queue of deleted vectors of one space, as the writer reads and clears it."""

    def __init__(self, catalog: Catalog, space: str) -> None:
        self._catalog, self._space = catalog, space

    def pending(self) -> tuple[np.ndarray, int | None]:
        return self._catalog.queued_deletions(self._space)

    def clear(self, upto: int) -> None:
        self._catalog.clear_deletions(self._space, upto)


class VectorSpace:
    """One named space: a reader of its published snapshot, and its writer when this process holds the lock."""

    def __init__(
        self,
        name: str,
        encoder: Encoder,
        directory: Path,
        catalog: Catalog,
        policy: IndexPolicy | None = None,
        *,
        merges: MergePolicy | None = None,
        dtype: str = "float16",
    ) -> None:
        self.name = name
        self.encoder = encoder
        self.directory = directory
        self.catalog = catalog
        self.policy = policy or IndexPolicy()
        self.merges = merges or MergePolicy()
        self.dtype = dtype
        self._snapshot: SpaceSnapshot | None = None
        self._stamp: tuple[int, int] | None = None
        self._opened = False
        self._loading = False
        self._writer: SpaceWriter | None = None
        self._checked = False
        self._adopt_fingerprint: str | None = None
        self._lock = threading.Lock()

    def embeds(self, modality: Modality) -> bool:
        return modality in self.encoder.modalities

    # reading ---------------------------------------------------------------------------------------------

    def stored_index(self) -> SpaceSnapshot | None:
        """The published snapshot as it is, without loading the encoder (``None`` before the first publication)."""
        if not self._opened:
            with self._lock:
                if not self._opened:
                    self._migrate_legacy()
                    self._load()
                    self._opened = True
        return self._snapshot

    def published_manifest(self) -> Manifest | None:
        """The newest publication's manifest, read from disk without opening a segment (``None``: none yet)."""
        if self._snapshot is not None:
            return self._snapshot.manifest
        self._migrate_legacy()
        return read_manifest(self.directory)

    def refresh(self, *, wait: bool = False) -> bool:
        """Pick up a newer publication (another process published one); True if one was found.

        The check is one ``stat``. The new snapshot is loaded in a background thread unless ``wait``: requests keep
        the snapshot they started with and never wait for a load.
        """
        if not self._opened:
            self.stored_index()
            return True
        if manifest_stamp(self.directory) == self._stamp:
            return False
        if wait or self._snapshot is None:  # nothing to answer from yet: the first publication is worth the wait
            with self._lock:
                self._load()
            return True
        with self._lock:
            if self._loading:
                return False
            self._loading = True
        threading.Thread(target=self._load_in_background, name=f"xmodal-load-{self.name}", daemon=True).start()
        return True

    def _load_in_background(self) -> None:
        try:
            with self._lock:
                self._load()
        except Exception:  # the current snapshot stays; the next refresh tries again
            log.exception("space %s: could not load the newest publication", self.name)
        finally:
            self._loading = False

    def _load(self) -> None:
        """Open the published manifest, reusing the segments the current snapshot already has open."""
        for attempt in range(3):
            stamp = manifest_stamp(self.directory)
            manifest = read_manifest(self.directory)
            if manifest is None:
                self._snapshot, self._stamp = None, stamp
                return
            opened = {s.info.name: s for s in self._snapshot.segments} if self._snapshot else {}
            try:
                self._snapshot = SpaceSnapshot.open(self.directory, manifest, opened)
            except FileNotFoundError:  # a newer publication removed an old segment meanwhile: read it instead
                if attempt == 2:
                    raise
                continue
            self._stamp = stamp
            return

    def _migrate_legacy(self) -> None:
        """Turn a space saved before segments into one segment (once, by whichever process opens it first)."""
        if not has_legacy(self.directory) or read_manifest(self.directory) is not None:
            return
        with FileLock(self.directory / ".migrate.lock"):
            if read_manifest(self.directory) is not None:
                return
            legacy = read_legacy(self.directory)
            if legacy is None:
                return
            writer = SpaceWriter.open(
                self.directory,
                space=self.name,
                encoder_spec=legacy.encoder_spec,
                fingerprint=legacy.fingerprint,
                dim=legacy.dim,
                dtype=self.dtype,
                policy=self.policy,
                merges=self.merges,
            )
            writer.add(legacy.ids, legacy.vectors)
            writer.publish(final=True)
            remove_legacy(self.directory)
            log.info("space %s: moved %d vectors into the segment store", self.name, len(legacy.ids))

    def check_encoder(self) -> None:
        """Load the encoder and check that the published vectors were made by it (``SpaceMismatchError`` if not)."""
        snapshot = self.stored_index()
        if self._checked:
            return
        if snapshot is not None:
            fingerprint, stored = self.encoder.fingerprint, snapshot.manifest.fingerprint
            if stored != fingerprint and self.encoder.accepts_fingerprint(stored):
                # made before fingerprints hashed bytes, by these same weights: the writer publishes the new one
                self._adopt_fingerprint = fingerprint
            else:
                snapshot.check_compatible(self.encoder.spec, fingerprint)
        else:
            self.encoder.fingerprint  # noqa: B018 (loads the model: a missing one fails here, not mid-run)
        self._checked = True

    @property
    def size(self) -> int:
        snapshot = self.stored_index()
        return snapshot.ntotal if snapshot else 0

    # writing (the holder of the home's writer lock only) -------------------------------------------------

    def writer(self) -> SpaceWriter:
        """This space's writer, opened on the newest publication, after checking the encoder (lock holder only)."""
        self.check_encoder()
        return self._open_writer()

    def _open_writer(self) -> SpaceWriter:
        if self._writer is None:
            published = read_manifest(self.directory) is not None
            if not published:
                self.catalog.save_space(
                    name=self.name,
                    encoder_spec=self.encoder.spec,
                    dim=self.encoder.dim,
                    fingerprint=self.encoder.fingerprint,
                )
            self._writer = SpaceWriter.open(
                self.directory,
                space=self.name,
                encoder_spec=self.encoder.spec,
                fingerprint=self.encoder.fingerprint if not published else "",
                dim=self.encoder.dim if not published else 0,
                dtype=self.dtype,
                policy=self.policy,
                merges=self.merges,
            )
            if self._adopt_fingerprint is not None:
                self._writer.adopt_fingerprint(self._adopt_fingerprint)
        return self._writer

    def save(self, *, final: bool = False, apply_queued: bool = False) -> bool:
        """Publish what this process wrote, with the deletions queued in the catalog; True if it published.

        Only a process that opened the writer publishes (a server never does); ``apply_queued``: the caller holds
        the writer lock and publishes queued deletions even if it wrote nothing (a prune). ``final``: the end of a
        run, when merges too large for a checkpoint run.
        """
        writer = self._writer
        if writer is None:
            if not apply_queued or read_manifest(self.directory) is None:
                return False
            if not self.catalog.has_queued_deletions(self.name):
                return False
            writer = self._open_writer()
        queued = self.catalog.has_queued_deletions(self.name)
        if not (writer.dirty or queued or (final and writer.needs_merge(final=True))):
            return False
        writer.publish(CatalogDeletions(self.catalog, self.name), final=final)
        self.refresh(wait=True)
        return True

    def release_writer(self) -> None:
        """Drop the writer; anything it did not publish is lost (the lock holder publishes before letting go)."""
        self._writer = None

    def reconcile(self) -> int:
        """After an interrupted run: forget catalog rows newer than the last publication; returns how many.

        Vectors are published after their rows commit, so rows above the manifest's high-water mark are the only
        ones a crash can leave without vectors; their items are embedded again by this run. Deletions that did
        not reach a publication are still queued in the catalog and applied by the next one. The cost is the
        work since the last publication, not the size of the space.
        """
        manifest = read_manifest(self.directory)
        high_water = manifest.high_water if manifest is not None else 0
        if manifest is not None and self.catalog.has_queued_deletions(self.name):
            self._open_writer()  # so that this run's publication applies them, even if nothing else changes
        orphans = self.catalog.vector_ids_above(self.name, high_water)
        if len(orphans):
            self.catalog.delete_embeddings(self.name, orphans.tolist())
            log.warning(
                "space %s: forgot %d vectors an interrupted run had not published; their items are embedded again",
                self.name,
                len(orphans),
            )
        return len(orphans)

    def drop(self) -> int:
        """Delete the space's vectors and catalog rows; returns how many embeddings went."""
        with self._lock:
            count = self.catalog.drop_space(self.name)
            shutil.rmtree(self.directory, ignore_errors=True)
            self._snapshot, self._stamp, self._writer, self._checked = None, None, None, False
        return count


class SpaceSet:
    """Every space the settings define, by name."""

    def __init__(self, spaces: dict[str, VectorSpace]) -> None:
        self._spaces = spaces

    @classmethod
    def from_settings(cls, settings: Settings, catalog: Catalog, build: EncoderBuilder = build_encoder) -> SpaceSet:
        """The settings' spaces; ``build`` makes each encoder (tests pass one that shares loaded models)."""
        policy, merges = index_policy(settings), merge_policy(settings)
        return cls(
            {
                name: VectorSpace(
                    name,
                    build(spec, settings),
                    settings.spaces_dir / name,
                    catalog,
                    policy,
                    merges=merges,
                    dtype=settings.vector_dtype,
                )
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

    def save(self, *, final: bool = False, apply_queued: bool = False) -> None:
        """Publish every space this process wrote to (and, with ``apply_queued``, queued deletions: lock holder)."""
        for space in self:
            space.save(final=final, apply_queued=apply_queued)

    def refresh(self, *, wait: bool = False) -> None:
        """Pick up publications another process made since they were loaded."""
        for space in self:
            space.refresh(wait=wait)

    def release_writers(self) -> None:
        """Forget the writers (when the writer lock is released: the next holder starts from the disk)."""
        for space in self:
            space.release_writer()
