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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from xmodal.config import Settings
from xmodal.encoders import Encoder, build_encoder
from xmodal.encoders.base import l2_normalise
from xmodal.modality import Modality
from xmodal.store.agreement import MIN_PAIRS, measure_agreement
from xmodal.store.ann import SEARCH_OVERFETCH, IndexPolicy
from xmodal.store.catalog import Catalog
from xmodal.store.legacy import has_legacy, read_legacy, remove_legacy
from xmodal.store.manifest import Manifest, manifest_stamp, read_manifest
from xmodal.store.merge_policy import MergePolicy
from xmodal.store.snapshot import SpaceSnapshot
from xmodal.store.versions import (
    SpaceVersion,
    VersionPointer,
    pointer_stamp,
    read_pointer,
    version_directory,
)
from xmodal.store.writer import SpaceWriter

log = logging.getLogger(__name__)

EncoderBuilder = Callable[[str, Settings], Encoder]
AGREEMENT_ITEMS = 256  # captioned items a publication measures its spaces' cross-modal agreement on


def index_policy(settings: Settings) -> IndexPolicy:
    """The settings' ``index_*`` fields as the store's index policy."""
    return IndexPolicy(
        exact_below=settings.index_exact_below,
        ivf_above=settings.index_ivf_above,
        memory_budget_bytes=int(settings.index_memory_budget),
        hnsw_m=settings.index_hnsw_m,
        target_recall=settings.index_target_recall,
        tune_queries=settings.index_tune_queries,
        tune_k=settings.fusion_candidates * SEARCH_OVERFETCH,  # what a space is first asked for, per query part
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
        key: str | None = None,
        version: int = 1,
    ) -> None:
        self.name = name
        self.key = key or name  # the catalog's name for this version's rows (see xmodal.store.versions)
        self.version = version
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
        self._lock = threading.Lock()  # held while a snapshot loads: one load at a time
        self._loading_lock = threading.Lock()  # guards _loading only, never held while loading

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
        the snapshot they started with and never wait for a load. A space not read yet stays unopened (unless
        ``wait``): a query that does not touch it does not pay for reading its index.
        """
        if not self._opened:  # never read: opened when first used, from the newest publication then
            if wait:
                self.stored_index()
            return wait
        if manifest_stamp(self.directory) == self._stamp:
            return False
        if wait or self._snapshot is None:  # nothing to answer from yet: the first publication is worth the wait
            with self._lock:
                self._load()
            return True
        with self._loading_lock:  # not the load lock: a request never waits for a load under way
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
            with self._loading_lock:
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
                    name=self.key,
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
            published = read_manifest(self.directory)
            if not apply_queued or published is None:
                return False
            unmeasured = final and self._unmeasured(published.calibration)  # a home published before it was measured
            if not self.catalog.has_queued_deletions(self.key) and not unmeasured:
                return False
            writer = self._open_writer()
        queued = self.catalog.has_queued_deletions(self.key)
        unmeasured = final and self._unmeasured(writer.manifest.calibration)
        if not (writer.dirty or queued or unmeasured or (final and writer.needs_merge(final=True))):
            return False
        measure = self._measure_agreement if final or "pairs" not in writer.manifest.calibration else None
        writer.publish(CatalogDeletions(self.catalog, self.key), final=final, measure=measure)
        self.refresh(wait=True)
        return True

    def _unmeasured(self, calibration: dict[str, Any]) -> bool:
        modalities = self.encoder.modalities
        return "pairs" not in calibration and Modality.TEXT in modalities and len(modalities) > 1

    def _measure_agreement(self, ids: np.ndarray, vectors: np.ndarray) -> dict[str, Any]:
        """The manifest's ``calibration`` for a space that embeds text and another modality: per pair
        (``text->image``), how well captions find their own items (see :mod:`xmodal.store.agreement`), measured on
        up to ``AGREEMENT_ITEMS`` captioned items of the publication's calibration sample. Once per run (at its
        final publication, or the first), so its cost (encoding those captions) follows the run, not the home."""
        others = sorted(m.value for m in self.encoder.modalities if m is not Modality.TEXT)
        if Modality.TEXT not in self.encoder.modalities or not others or not len(ids):
            return {}
        hits = self.catalog.resolve_vectors(ids.tolist())
        rows: dict[int, int] = {}  # item id -> a sampled row of its own-modality vector
        for row, vector_id in enumerate(ids.tolist()):
            hit = hits.get(vector_id)
            if hit is not None and hit.modality in others and hit.origin is None:
                rows.setdefault(hit.item_id, row)
        items = self.catalog.get_items(sorted(rows)[: 4 * AGREEMENT_ITEMS])
        pairs: dict[str, list[tuple[str, int]]] = {}
        for item_id, item in items.items():
            if item.caption and item.modality and len(pairs.get(item.modality, [])) < AGREEMENT_ITEMS:
                pairs.setdefault(item.modality, []).append((item.caption, rows[item_id]))
        measured: dict[str, Any] = {}
        for modality, chosen in pairs.items():
            captions = [caption for caption, _ in chosen]
            if len(captions) < MIN_PAIRS:
                continue
            queries = l2_normalise(np.asarray(self.encoder.encode_texts(captions), dtype=np.float32))
            result = measure_agreement(queries, vectors[[row for _, row in chosen]])
            if result is not None:
                measured[f"text->{modality}"] = result
                log.info("space %s: captions find their own %s with AUC %.3f", self.name, modality, result["agreement"])
        return {"pairs": measured}

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
        if manifest is not None and self.catalog.has_queued_deletions(self.key):
            self._open_writer()  # so that this run's publication applies them, even if nothing else changes
        orphans = self.catalog.vector_ids_above(self.key, high_water)
        if len(orphans):
            self.catalog.delete_embeddings(self.key, orphans.tolist())
            log.warning(
                "space %s: forgot %d vectors an interrupted run had not published; their items are embedded again",
                self.name,
                len(orphans),
            )
        return len(orphans)

    def drop(self) -> int:
        """Delete the space's vectors and catalog rows; returns how many embeddings went."""
        with self._lock:
            count = self.catalog.drop_space(self.key)
            shutil.rmtree(self.directory, ignore_errors=True)
            self._snapshot, self._stamp, self._writer, self._checked = None, None, None, False
        return count


class SpaceFactory:
    """Builds the :class:`VectorSpace` of one version of a space from the settings (its home, its encoder)."""

    def __init__(self, settings: Settings, catalog: Catalog, build: EncoderBuilder = build_encoder) -> None:
        self.settings, self.catalog, self.build = settings, catalog, build
        self._policy, self._merges = index_policy(settings), merge_policy(settings)

    def space_dir(self, name: str) -> Path:
        return self.settings.spaces_dir / name

    def pointer(self, name: str) -> VersionPointer:
        """The space's versions (a space that never switched: version 1 with the settings' encoder)."""
        return read_pointer(self.space_dir(name)) or VersionPointer.initial(name, self.settings.space_encoders()[name])

    def make(self, name: str, version: SpaceVersion) -> VectorSpace:
        return VectorSpace(
            name,
            self.build(version.encoder_spec, self.settings),
            version_directory(self.space_dir(name), version.number),
            self.catalog,
            self._policy,
            merges=self._merges,
            dtype=self.settings.vector_dtype,
            key=version.key(name),
            version=version.number,
        )


class SpaceSet:
    """Every space the settings define, by name, each at its current version (and the shadows being built).

    A request that runs inside :meth:`pinned` sees one version of each space throughout, even if a switch makes
    another version current meanwhile; a refresh picks up a switch (the new version is loaded before it answers).
    """

    def __init__(self, spaces: dict[str, VectorSpace], factory: SpaceFactory | None = None) -> None:
        self._spaces = spaces
        self._factory = factory
        self._shadows: dict[str, VectorSpace] = {}
        self._stamps: dict[str, tuple[int, int] | None] = {}
        self._switching: set[str] = set()  # spaces whose new current version loads in the background
        self._lock = threading.Lock()
        self._pinned: ContextVar[dict[str, VectorSpace] | None] = ContextVar(f"xmodal-pinned-{id(self)}", default=None)
        if factory is not None:
            for name in spaces:
                self._stamps[name] = pointer_stamp(factory.space_dir(name))
                self._shadows_from(name, factory.pointer(name))

    @classmethod
    def from_settings(cls, settings: Settings, catalog: Catalog, build: EncoderBuilder = build_encoder) -> SpaceSet:
        """The settings' spaces; ``build`` makes each encoder (tests pass one that shares loaded models). A space
        that switched model (``xmodal spaces switch``) uses the model its pointer names as current."""
        factory = SpaceFactory(settings, catalog, build)
        spaces = {}
        for name, configured in settings.space_encoders().items():
            current = factory.pointer(name).current_version
            if current.encoder_spec != configured and read_pointer(factory.space_dir(name)) is not None:
                log.info(
                    "space %s uses %s (version %d, set by `xmodal spaces switch` or an import); the configured %s "
                    "applies to a new space only",
                    name, current.encoder_spec, current.number, configured,
                )  # fmt: skip
            spaces[name] = factory.make(name, current)
        return cls(spaces, factory)

    def _view(self) -> dict[str, VectorSpace]:
        return self._pinned.get() or self._spaces

    def __iter__(self) -> Iterator[VectorSpace]:
        return iter(list(self._view().values()))

    def __contains__(self, name: object) -> bool:
        return name in self._view()

    def __getitem__(self, name: str) -> VectorSpace:
        return self._view()[name]

    def names(self) -> list[str]:
        return list(self._view())

    @contextmanager
    def pinned(self, view: Mapping[str, VectorSpace] | None = None) -> Iterator[Mapping[str, VectorSpace]]:
        """Within this block (in this thread or task) every lookup sees the versions current at its start, or
        ``view``: the versions an earlier block pinned (a query encoded in one block is searched in another, on
        the same versions, even if a switch of model made another version current in between)."""
        held = dict(view) if view is not None else dict(self._spaces)
        token = self._pinned.set(held)
        try:
            yield held
        finally:
            self._pinned.reset(token)

    # versions --------------------------------------------------------------------------------------------

    @property
    def factory(self) -> SpaceFactory:
        if self._factory is None:
            raise RuntimeError("this space set was not built from settings: it has no versions")
        return self._factory

    def pointer(self, name: str) -> VersionPointer:
        """The versions of space ``name`` as they are on disk now."""
        return self.factory.pointer(name)

    def shadow(self, name: str) -> VectorSpace | None:
        """The version of ``name`` being built (``None`` when no switch is under way)."""
        return self._shadows.get(name)

    def shadows(self) -> list[VectorSpace]:
        """Every shadow version being built, one per space at most."""
        return list(self._shadows.values())

    def _shadows_from(self, name: str, pointer: VersionPointer) -> None:
        wanted = pointer.shadow_version
        held = self._shadows.get(name)
        if wanted is None:
            self._shadows.pop(name, None)
        elif held is None or held.version != wanted.number:
            self._shadows[name] = self.factory.make(name, wanted)

    def _follow_pointers(self, *, wait: bool) -> None:
        """Pick up switches, rollbacks and new shadows written since the pointers were last read."""
        if self._factory is None:
            return
        for name in list(self._spaces):
            stamp = pointer_stamp(self._factory.space_dir(name))
            if stamp == self._stamps.get(name):
                continue
            pointer = self._factory.pointer(name)
            self._shadows_from(name, pointer)
            if pointer.current == self._spaces[name].version:
                self._stamps[name] = stamp
                continue
            with self._lock:
                if name in self._switching and not wait:
                    continue  # a background load of it is under way
                self._switching.add(name)
            if wait:
                self._adopt(name, pointer, stamp)
            else:
                threading.Thread(
                    target=self._adopt, args=(name, pointer, stamp), name=f"xmodal-switch-{name}", daemon=True
                ).start()

    def _adopt(self, name: str, pointer: VersionPointer, stamp: tuple[int, int] | None) -> None:
        """Load the pointer's current version of ``name``, then make it the one new requests use."""
        try:
            space = self.factory.make(name, pointer.current_version)
            space.stored_index()
            if space.size:
                space.check_encoder()  # the model loads now, not in the first request after the switch
            self._spaces = {**self._spaces, name: space}
            self._stamps[name] = stamp
            log.info("space %s: now answering from version %d (%s)", name, space.version, space.encoder.spec)
        except Exception:  # the old version keeps answering; the next refresh tries again
            log.exception("space %s: could not load version %d", name, pointer.current)
        finally:
            with self._lock:
                self._switching.discard(name)

    # publishing ------------------------------------------------------------------------------------------

    def save(self, *, final: bool = False, apply_queued: bool = False) -> None:
        """Publish every space this process wrote to (and, with ``apply_queued``, queued deletions: lock holder)."""
        for space in [*self._spaces.values(), *self._shadows.values()]:
            space.save(final=final, apply_queued=apply_queued)

    def follow_switches(self) -> None:
        """Pick up the switches of model another process started or finished, and nothing else: an index run
        opens a space's segments only when it has work there."""
        self._follow_pointers(wait=True)

    def refresh(self, *, wait: bool = False) -> None:
        """Pick up publications and switches another process made since they were loaded."""
        self._follow_pointers(wait=wait)
        for space in self._spaces.values():
            space.refresh(wait=wait)

    def release_writers(self) -> None:
        """Forget the writers (when the writer lock is released: the next holder starts from the disk)."""
        for space in [*self._spaces.values(), *self._shadows.values()]:
            space.release_writer()

    def reset(self, name: str) -> None:
        """After the space's files and rows were dropped: version 1 with the settings' encoder again."""
        factory = self.factory
        self._shadows.pop(name, None)
        self._spaces = {**self._spaces, name: factory.make(name, factory.pointer(name).current_version)}
        self._stamps[name] = pointer_stamp(factory.space_dir(name))
