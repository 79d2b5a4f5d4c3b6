"""The indexer: scan -> read/decode (worker threads) -> embed -> write, with a bounded queue between them.

Decoding runs ahead of the encoder in a thread pool, at most ``decode_queue_size`` files ahead, so the encoder
never waits for the disk and memory stays bounded. Each stage is timed separately.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from xmodal.config import Settings
from xmodal.encoders.batching import BatchSizer
from xmodal.encoders.speech import Transcriber
from xmodal.errors import NotFoundError, WeightsUnavailableError
from xmodal.indexer.decode import AudioLimits, ImageLimits, audio_supported
from xmodal.indexer.distributed import encode_on_ray
from xmodal.indexer.embed import FileVectors, embed_batch
from xmodal.indexer.locations import Listing, Root, root_name, walk_roots
from xmodal.indexer.reader import (
    DecodedFile,
    Outcome,
    Preparers,
    ReadLimits,
    precheck,
    read_file,
    reusable_original,
)
from xmodal.indexer.sources import SourceFile
from xmodal.indexer.write import write_batch
from xmodal.modality import Modality
from xmodal.spaces import SpaceSet, VectorSpace
from xmodal.store.catalog import Catalog, FileState, WriteRequest
from xmodal.store.models import Item, ItemStatus

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


class Progress(Protocol):
    """What the indexer tells about its progress (the CLI draws a bar from it)."""

    def scanning(self, files_seen: int) -> None: ...
    def start(self, total: int) -> None: ...
    def advance(self, count: int) -> None: ...
    def finish(self) -> None: ...


class _NoProgress:
    def scanning(self, files_seen: int) -> None: ...
    def start(self, total: int) -> None: ...
    def advance(self, count: int) -> None: ...
    def finish(self) -> None: ...


@dataclass
class IndexReport:
    """What a run did: counts by outcome, failures with reasons, spaces it could not use, stage timings."""

    scanned: int = 0
    unchanged: int = 0
    indexed: int = 0
    updated: int = 0
    failed: int = 0
    skipped: int = 0
    vectors_added: int = 0
    repaired: int = 0
    pruned: int = 0
    reused: int = 0  # moved or copied files whose vectors were copied, not encoded
    deferred: int = 0  # left for the next run by max_items
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped_reasons: Counter[str] = field(default_factory=Counter)
    spaces_unavailable: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    batch_size: int = 0  # encoder batch size at the end of the run (grows on a GPU)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["skipped_reasons"] = dict(self.skipped_reasons)
        return data


def bounded_map(pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T], limit: int) -> Iterator[R]:
    """``pool.map`` that keeps at most ``limit`` calls in flight and yields results in input order."""
    pending: list[Future[R]] = []
    head = 0
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) - head >= limit:
            yield pending[head].result()
            pending[head] = None  # type: ignore[call-overload]  # free the result
            head += 1
    for future in pending[head:]:
        yield future.result()


class Indexer:
    """Indexes folders into a catalog and its spaces. Build one per run; see :meth:`run`."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        spaces: SpaceSet,
        progress: Progress | None = None,
        transcriber: Transcriber | None = None,
        ray_address: str | None = None,
    ) -> None:
        self.settings = settings
        self.ray_address = ray_address
        self.catalog = catalog
        self.spaces = spaces
        self.progress = progress or _NoProgress()
        self.transcriber = transcriber
        self.limits = ReadLimits(
            max_file_bytes=settings.max_file_bytes,
            max_text_bytes=settings.max_text_bytes,
            max_caption_chars=settings.max_caption_chars,
            text_excerpt_chars=settings.text_excerpt_chars,
            image=ImageLimits(max_pixels=settings.max_image_pixels),
            audio=AudioLimits(max_seconds=settings.max_audio_seconds),
            text_extensions=frozenset(settings.text_extensions),
        )

    def run(self, roots: Sequence[Root], *, prune: bool = False, max_items: int | None = None) -> IndexReport:
        """Index every file under ``roots`` (folders, bucket prefixes, shard sets: see ``locations.parse_root``);
        files already indexed and unchanged are only stat'ed (or listed), and no model is loaded when nothing
        changed. ``prune``: forget items under ``roots`` whose files are gone (never under a prefix whose listing
        failed). ``max_items``: process at most this many files now (the rest are ``deferred`` to the next run)."""
        missing = [str(root) for root in roots if isinstance(root, Path) and not root.exists()]
        if missing:
            raise NotFoundError(f"Nothing to index at {', '.join(missing)}: no such file or folder.")
        report = IndexReport()
        started = time.perf_counter()
        run_id = self.catalog.start_run([root_name(root) for root in roots])
        status = "failed"
        active: list[VectorSpace] = []
        listing = Listing(scratch_parent=self.settings.home / "scratch")
        try:
            report.repaired = sum(space.reconcile() for space in self.spaces)
            self._check_changed_encoders()
            scan = self._scan(roots, listing, report)
            # Only spaces whose weights can be had count; nothing loads until there is work, and files skipped
            # without decoding (unsupported kinds, tried again every run since they are not recorded) are none.
            selected = scan.select([s for s in self.spaces if s.encoder.weights_reachable()])
            report.unchanged = scan.count - len(selected)
            todo = self._precheck(selected, report)
            if todo:  # only now load the models, and drop what only the unavailable ones lacked
                active = self._activate_spaces(report)
                if len(active) < len(self.spaces.names()):
                    wanted = {source.path for source in scan.select(active)}
                    report.unchanged += sum(1 for source in todo if source.path not in wanted)
                    todo = [source for source in todo if source.path in wanted]
            if max_items is not None and len(todo) > max_items:
                report.deferred, todo = len(todo) - max_items, todo[:max_items]
            if todo:
                self._process(todo, active, self._activate_transcriber(report), scan.coverage, report)
            if prune:  # after processing, so a moved file found its old self and reused its vectors
                report.pruned = self._prune(listing.prune_roots, scan.seen)
            status = "finished"
        finally:
            listing.close()
            self.spaces.save()
            self.progress.finish()
            report.timings["total_s"] = time.perf_counter() - started
            self.catalog.finish_run(run_id, status=status, stats=report.to_dict())
        return report

    def _precheck(self, todo: list[SourceFile], report: IndexReport) -> list[SourceFile]:
        remaining = []
        for source in todo:
            outcome = precheck(source, self.limits)
            if outcome is None:
                remaining.append(source)
            else:
                self._count(outcome, set(), report)
                if outcome.record is not None:  # unreadable: recorded like any failure
                    self.catalog.write_items([WriteRequest(outcome.record)])
        return remaining

    def _check_changed_encoders(self) -> None:
        """A space whose configured encoder spec is not the one it was built with must prove it is the same model
        (``SpaceMismatchError`` otherwise), even when no file changed; unchanged specs load nothing."""
        for space in self.spaces:
            stored = space.stored_index()
            if stored is not None and stored.header.encoder_spec != space.encoder.spec:
                try:
                    space.checked_index()
                except WeightsUnavailableError:
                    continue  # reported when there is work for this space

    def _activate_spaces(self, report: IndexReport) -> list[VectorSpace]:
        """Spaces whose model loads; the others are reported and left for a later run."""
        active: list[VectorSpace] = []
        for space in self.spaces:
            try:
                space.checked_index()
            except WeightsUnavailableError as exc:
                report.spaces_unavailable[space.name] = str(exc)
                log.warning("space %s skipped: %s", space.name, exc)
                continue
            active.append(space)
        return active

    def _activate_transcriber(self, report: IndexReport) -> Transcriber | None:
        if self.transcriber is None or not audio_supported():
            return None
        try:
            self.transcriber.load()
        except WeightsUnavailableError as exc:
            report.spaces_unavailable["speech"] = str(exc)
            log.warning("speech is not transcribed: %s", exc)
            return None
        return self.transcriber

    def _scan(self, roots: Sequence[Root], listing: Listing, report: IndexReport) -> _Scan:
        started = time.perf_counter()
        scan = _Scan(self.catalog.file_states(), self.catalog.spaces_by_item())

        def unreadable(path: str, reason: str) -> None:
            report.failed += 1
            report.failures.append((path, reason))

        for source in walk_roots(
            roots,
            listing=listing,
            known=scan.states,
            text_extensions=self.settings.text_extensions,
            include_hidden=self.settings.include_hidden,
            on_error=unreadable,
        ):
            scan.add(source)
            if scan.count % 1000 == 0:
                self.progress.scanning(scan.count)
        report.scanned = scan.count
        report.timings["scan_s"] = time.perf_counter() - started
        return scan

    def _prune(self, roots: Sequence[str], seen: set[str]) -> int:
        count, vectors = self.catalog.prune(roots, seen)
        self.spaces.remove_vectors(vectors)
        return count

    def _process(
        self,
        todo: list[SourceFile],
        active: list[VectorSpace],
        transcriber: Transcriber | None,
        coverage: dict[int, set[str]],
        report: IndexReport,
    ) -> None:
        settings = self.settings

        def same_content(content_hash: str) -> Item | None:
            """An indexed copy whose vectors cover every active space (else the file is embedded afresh)."""
            original = self.catalog.item_with_content(content_hash)
            if original is None or original.modality is None:
                return None
            state = FileState(original.id, 0, 0, None, original.status, original.modality, _has_text(original))
            return original if _covered(state, coverage, active) else None

        preparers = Preparers(
            images={space.name: space.encoder.prepare_image for space in active if space.embeds(Modality.IMAGE)},
            jpegs={space.name: space.encoder.prepare_jpeg for space in active if space.embeds(Modality.IMAGE)},
            audio={space.name: space.encoder.prepare_audio for space in active if space.embeds(Modality.AUDIO)},
            transcriber=transcriber,
            same_content=same_content,
        )
        known_paths = set(self.catalog.file_states(str(source.path) for source in todo))
        timings = Counter[str]()
        self.progress.start(len(todo))

        def timed_read(source: SourceFile) -> tuple[DecodedFile, float]:
            begin = time.perf_counter()
            return read_file(source, self.limits, preparers), time.perf_counter() - begin

        sizer = BatchSizer.for_settings(settings)
        if self.ray_address is not None:
            self._commit_shards(todo, active, transcriber, same_content, known_paths, sizer, report, timings)
            report.timings.update(timings)
            return
        batch: list[DecodedFile] = []
        since_save = 0
        with ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="xmodal-decode") as pool:
            for decoded, seconds in bounded_map(pool, timed_read, todo, settings.decode_queue_size):
                timings["decode_s"] += seconds
                self._count(decoded, known_paths, report)
                if decoded.record is not None:
                    batch.append(decoded)
                else:
                    self.progress.advance(1)
                if len(batch) >= sizer.size:
                    since_save += self._flush(batch, active, sizer, report, timings)
                    batch = []
                if since_save >= settings.checkpoint_every:
                    self.spaces.save()
                    since_save = 0
            self._flush(batch, active, sizer, report, timings)
        report.timings.update(timings)
        report.batch_size = sizer.size

    def _commit_shards(
        self,
        todo: list[SourceFile],
        active: list[VectorSpace],
        transcriber: Transcriber | None,
        same_content: Callable[[str], Item | None],
        known_paths: set[str],
        sizer: BatchSizer,
        report: IndexReport,
        timings: Counter[str],
    ) -> None:
        """Decode and encode on Ray; commit each shard here as it arrives (checkpointing as a local run does)."""
        assert self.ray_address is not None
        since_save = 0
        begin = time.perf_counter()
        shards = encode_on_ray(
            self.ray_address, self.settings, todo, active, self.limits, transcribe=transcriber is not None
        )
        for shard in shards:
            timings["ray_wait_s"] += time.perf_counter() - begin
            files: list[DecodedFile] = []
            vectors: list[dict[str, FileVectors]] = []
            for decoded, file_vectors in shard:
                record = decoded.record
                original = (
                    reusable_original(decoded.source, record.content_hash, record.caption, same_content)
                    if record is not None and record.content_hash
                    else None
                )
                if original is not None:  # the rule a local run applies: keep the indexed vectors
                    decoded = dataclasses.replace(decoded, reuse_from=original.id)
                    file_vectors = embed_batch([decoded], active, sizer=sizer)[0]
                self._count(decoded, known_paths, report)
                if decoded.record is None:
                    self.progress.advance(1)
                    continue
                files.append(decoded)
                vectors.append(file_vectors)
            middle = time.perf_counter()
            if files:
                report.vectors_added += write_batch(self.catalog, self.spaces, files, vectors)
            timings["write_s"] += time.perf_counter() - middle
            self.progress.advance(len(files))
            since_save += len(files)
            if since_save >= self.settings.checkpoint_every:
                self.spaces.save()
                since_save = 0
            begin = time.perf_counter()

    def _flush(
        self,
        batch: list[DecodedFile],
        active: list[VectorSpace],
        sizer: BatchSizer,
        report: IndexReport,
        timings: Counter[str],
    ) -> int:
        if not batch:
            return 0
        begin = time.perf_counter()
        vectors = embed_batch(batch, active, sizer=sizer)
        middle = time.perf_counter()
        report.vectors_added += write_batch(self.catalog, self.spaces, batch, vectors)
        timings["encode_s"] += middle - begin
        timings["write_s"] += time.perf_counter() - middle
        self.progress.advance(len(batch))
        return len(batch)

    @staticmethod
    def _count(decoded: DecodedFile, known_paths: set[str], report: IndexReport) -> None:
        if decoded.outcome is Outcome.SKIPPED:
            report.skipped += 1
            report.skipped_reasons[decoded.reason or "unsupported"] += 1
        elif decoded.outcome is Outcome.FAILED:
            report.failed += 1
            report.failures.append((str(decoded.source.path), decoded.reason or "unknown error"))
        elif str(decoded.source.path) in known_paths:
            report.updated += 1
        else:
            report.indexed += 1
        if decoded.reuse_from is not None:
            report.reused += 1


@dataclass
class _Scan:
    """What the walk found, and what the catalog knew of it."""

    states: dict[str, FileState]
    coverage: dict[int, set[str]]
    candidates: list[tuple[SourceFile, FileState | None]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    count: int = 0

    def add(self, source: SourceFile) -> None:
        path = str(source.path)
        self.count += 1
        self.seen.add(path)
        state = self.states.get(path)
        if state is None or not _unchanged(source, state):
            self.candidates.append((source, None))
        else:
            self.candidates.append((source, state))

    def select(self, active: list[VectorSpace]) -> list[SourceFile]:
        """New and changed files, and unchanged ones lacking vectors in an active space that can embed them."""
        return [
            source for source, state in self.candidates if state is None or not _covered(state, self.coverage, active)
        ]


def _has_text(item: Item) -> bool:
    return item.caption is not None or item.transcript is not None or item.modality == Modality.TEXT


def _unchanged(source: SourceFile, state: FileState) -> bool:
    return (
        state.size == source.size
        and state.mtime_ns == source.mtime_ns
        and state.sidecar_mtime_ns == source.sidecar_mtime_ns
        and state.source_version == source.version
    )


def _covered(state: FileState, coverage: dict[int, set[str]], active: list[VectorSpace]) -> bool:
    """True when the item has vectors in every active space that can embed it."""
    if state.status == ItemStatus.FAILED or state.modality is None:
        return True
    have = coverage.get(state.item_id, set())
    modality = Modality(state.modality)
    for space in active:
        wanted = space.embeds(modality) or (state.has_text and space.embeds(Modality.TEXT))
        if wanted and space.name not in have:
            return False
    return True
