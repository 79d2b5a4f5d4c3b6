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
from xmodal.encoders.batching import BatchSizers
from xmodal.encoders.ocr import MISSING as OCR_MISSING
from xmodal.encoders.ocr import TextReader, ocr_supported
from xmodal.encoders.speech import Transcriber
from xmodal.errors import NotFoundError, WeightsUnavailableError
from xmodal.indexer.decode import AudioLimits, ImageLimits, audio_supported
from xmodal.indexer.distributed import EncodedBatch, ShardTask, encode_on_ray, encode_shards_on_ray
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
from xmodal.indexer.scan import CoverageLookup, Scan, coverage_lookup, covered, has_text
from xmodal.indexer.shadow import ShadowRun, continue_shadows
from xmodal.indexer.sources import AUDIO_EXTENSIONS, SourceFile, normalise_roots
from xmodal.indexer.webdataset import VanishedShards
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
    still_failing: int = 0  # unchanged files that failed in an earlier run (listed in failures again)
    skipped: int = 0
    vectors_added: int = 0
    repaired: int = 0
    pruned: int = 0
    prunes_skipped: list[tuple[str, str]] = field(default_factory=list)  # (root, why it was not pruned)
    reused: int = 0  # moved or copied files whose vectors were copied, not encoded
    ocr_read: int = 0  # images OCR read in this run
    ocr_with_text: int = 0  # ... and found words in
    transcribed: int = 0  # audio files the speech model listened to in this run
    transcripts_dropped: int = 0  # ... whose text was not kept: silence, sounds, or not speech in its language
    deferred: int = 0  # left for the next run by max_items
    shadows: dict[str, ShadowRun] = field(default_factory=dict)  # spaces switching model: the new version's build
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped_reasons: Counter[str] = field(default_factory=Counter)
    spaces_unavailable: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    batch_size: int = 0  # encoder batch size at the end of the run (grows on a GPU)

    @property
    def ok(self) -> bool:
        """No file failed and every prune asked for ran (the CLI exits 1 otherwise)."""
        return not self.failed and not self.prunes_skipped

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
        on_plan: Callable[[str], None] | None = None,
        text_reader: TextReader | None = None,
    ) -> None:
        self.settings = settings
        self.on_plan = on_plan  # told, before the work starts, about long work such as transcription
        self.ray_address = ray_address
        self.catalog = catalog
        self.spaces = spaces
        self.progress = progress or _NoProgress()
        self.transcriber = transcriber
        self.text_reader = text_reader
        self.limits = ReadLimits(
            max_file_bytes=settings.max_file_bytes,
            max_text_bytes=settings.max_text_bytes,
            max_caption_chars=settings.max_caption_chars,
            text_excerpt_chars=settings.text_excerpt_chars,
            image=ImageLimits(settings.max_image_pixels, settings.svg_render_side, settings.svg_timeout_s),
            audio=AudioLimits(max_seconds=settings.max_audio_seconds),
            text_extensions=frozenset(settings.text_extensions),
        )

    def run(
        self,
        roots: Sequence[Root],
        *,
        prune: bool = False,
        force_prune: bool = False,
        max_items: int | None = None,
    ) -> IndexReport:
        """Index every file under ``roots`` (folders, bucket prefixes, shard sets: see ``locations.parse_root``);
        files already indexed and unchanged are only stat'ed (or listed), and no model is loaded when nothing
        changed. ``prune``: forget items under ``roots`` whose files are gone, except under a root that is empty
        or whose walk or listing met an error, and never more than ``prune_max_fraction`` of a root's items unless
        ``force_prune`` (skipped prunes are in ``prunes_skipped``). ``max_items``: process at most this many files
        now (the rest are ``deferred`` to the next run; on Ray, shards that must be read are read whole by the
        workers, one task per shard, and not counted against it). Folders inside another root are that root's."""
        local = normalise_roots([root for root in roots if isinstance(root, Path)])
        roots = [*local, *(root for root in roots if not isinstance(root, Path))]
        missing = [str(root) for root in local if not root.exists()]
        if missing:
            raise NotFoundError(f"Nothing to index at {', '.join(missing)}: no such file or folder.")
        report = IndexReport()
        started = time.perf_counter()
        run_id = self.catalog.start_run([root_name(root) for root in roots])
        status = "failed"
        active: list[VectorSpace] = []
        listing = Listing(scratch_parent=self.settings.home / "scratch", defer_shards=self.ray_address is not None)
        try:
            report.repaired = sum(space.reconcile() for space in self.spaces)
            self._check_changed_encoders()
            # Only spaces whose weights can be had count; nothing loads until there is work, and files skipped
            # without decoding (unsupported kinds, tried again every run since they are not recorded) are none.
            ocr = self._ocr_reader()
            reachable = [s for s in self.spaces if s.encoder.weights_reachable()]
            scan = self._scan(
                roots,
                listing,
                report,
                # a shadow version (a space switching model) keeps the files its new model has not embedded in view
                Scan(
                    self.catalog,
                    [*reachable, *self.spaces.shadows()],
                    ocr=ocr is not None,
                    lookup_batch=self.settings.scan_lookup_batch,
                ),
            )
            self._report_known_failures(scan, report)
            selected = scan.select(reachable, ocr=ocr is not None)
            report.unchanged = scan.count - len(selected)
            todo = self._precheck(selected, report)
            if todo and self.settings.ocr and not ocr_supported():
                report.spaces_unavailable["ocr"] = OCR_MISSING
                log.warning(OCR_MISSING)
            if todo or listing.deferred:  # only now load the models, and drop what only the unavailable ones lacked
                active = self._activate_spaces(report)
                if len(active) < len(self.spaces.names()):
                    wanted = {source.path for source in scan.select(active, ocr=ocr is not None)}
                    report.unchanged += sum(1 for source in todo if source.path not in wanted)
                    todo = [source for source in todo if source.path in wanted]
            if max_items is not None and len(todo) > max_items:
                report.deferred, todo = len(todo) - max_items, todo[:max_items]
            transcriber = self._activate_transcriber(report) if todo or (listing.deferred and active) else None
            if todo:
                self._announce(todo, transcriber, report)
                only_ocr = scan.only_ocr(active) if ocr is not None else {}
                self._process(todo, active, transcriber, coverage_lookup(self.catalog), report, ocr, only_ocr)
            if listing.deferred and active:  # shards a Ray run leaves to its workers, one task per shard
                self._shards_on_ray(listing, active, transcriber, scan, report)
            if prune:  # after processing, so a moved file found its old self and reused its vectors
                report.pruned = self._prune(
                    listing.prune_roots, scan, report, force=force_prune, vanished=listing.vanished
                )
            if self.spaces.shadows() and not report.deferred:  # a space switching model: build its new version
                budget = None if max_items is None else max_items - len(todo)
                sources = [candidate.source for candidate in scan.candidates]
                report.shadows = continue_shadows(
                    self.settings, self.catalog, self.spaces, sources, self.limits, budget=budget
                )
            status = "finished"
        finally:
            listing.close()
            self.spaces.save(final=True, apply_queued=True)
            self.progress.finish()
            report.timings["total_s"] = time.perf_counter() - started
            self.catalog.finish_run(run_id, status=status, stats=report.to_dict())
        return report

    def _report_known_failures(self, scan: Scan, report: IndexReport) -> None:
        """Unchanged files that failed before stay failures: counted, listed with their reason, exit code 1."""
        if not scan.known_failures:
            return
        items = self.catalog.get_items([item_id for item_id, _ in scan.known_failures])
        report.still_failing = len(scan.known_failures)
        for item_id, path in scan.known_failures:
            error = items[item_id].error if item_id in items else None
            report.failures.append((path, f"{error or 'failed'} (failed in an earlier run; unchanged since)"))

    def _announce(self, todo: list[SourceFile], transcriber: Transcriber | None, report: IndexReport) -> None:
        """Say up front when the run will transcribe many audio files, with an estimate of how long it takes."""
        audio = sum(1 for source in todo if source.extension in AUDIO_EXTENSIONS)
        if transcriber is None or not audio or self.on_plan is None:
            return
        seconds = audio * self.settings.transcribe_estimate_s
        minutes = seconds / 60
        about = f"{minutes:.0f} min" if minutes >= 1 else f"{seconds:.0f} s"
        line = (
            f"{audio} audio files will be transcribed by '{transcriber.spec}' (about {about} at "
            f"~{self.settings.transcribe_estimate_s:g} s per file; XMODAL_SPEECH_MODEL='' turns speech off)."
        )
        if report.deferred:
            line += f" --max-items left {report.deferred} files for later runs."
        elif minutes >= 1:
            line += " Use --max-items N to do it over several runs."
        self.on_plan(line)

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
            stored = space.published_manifest()  # the manifest only: no segment opens for a run without work
            if stored is not None and stored.encoder_spec != space.encoder.spec:
                try:
                    space.check_encoder()
                except WeightsUnavailableError:
                    continue  # reported when there is work for this space

    def _activate_spaces(self, report: IndexReport) -> list[VectorSpace]:
        """Spaces whose model loads; the others are reported and left for a later run."""
        active: list[VectorSpace] = []
        for space in self.spaces:
            try:
                space.writer()  # loads the model, checks it against the published vectors, registers the space
            except WeightsUnavailableError as exc:
                report.spaces_unavailable[space.name] = str(exc)
                log.info("space %s skipped: %s", space.name, exc)  # the report says it, once
                continue
            active.append(space)
        return active

    def _ocr_reader(self) -> TextReader | None:
        """The OCR reader when it is on and installed (not on Ray runs: their workers do not read text yet)."""
        if not self.settings.ocr or self.text_reader is None or self.ray_address is not None or not ocr_supported():
            return None
        return self.text_reader

    def _activate_transcriber(self, report: IndexReport) -> Transcriber | None:
        if self.transcriber is None or not audio_supported():
            return None
        try:
            self.transcriber.load()
        except WeightsUnavailableError as exc:
            report.spaces_unavailable["speech"] = str(exc)
            log.info("speech is not transcribed: %s", exc)  # the report says it, once
            return None
        return self.transcriber

    def _scan(self, roots: Sequence[Root], listing: Listing, report: IndexReport, scan: Scan) -> Scan:
        started = time.perf_counter()

        def unreadable(path: str, reason: str) -> None:
            report.failed += 1
            report.failures.append((path, reason))
            scan.errors.update(name for name in map(root_name, roots) if path == name or path.startswith(f"{name}/"))

        for source in walk_roots(
            roots,
            listing=listing,
            known_samples=self.catalog.sample_states,
            known_shards=self.catalog.shard_sample_counts,
            text_extensions=self.settings.text_extensions,
            include_hidden=self.settings.include_hidden,
            on_error=unreadable,
        ):
            scan.add(source)
            if scan.count % 1000 == 0:
                self.progress.scanning(scan.count)
        scan.flush()
        report.scanned = scan.count
        report.timings["scan_s"] = time.perf_counter() - started
        return scan

    def _prune(
        self,
        roots: Sequence[str],
        scan: Scan,
        report: IndexReport,
        *,
        force: bool,
        vanished: Sequence[VanishedShards] = (),
    ) -> int:
        """Forget the items whose files are gone, root by root, unless that root looks unmounted or damaged, and
        the samples of shards gone from a set that was listed in full, unless they are too large a share of it."""
        gone: list[int] = [item_id for group in vanished for item_id in self._vanished_samples(group, report, force)]
        for root in roots:
            total, missing = self.catalog.prune_candidates(root, scan.seen)
            reason = self._prune_refusal(root, scan, total, len(missing), force=force)
            if reason is not None:
                if missing:
                    report.prunes_skipped.append((root, reason))
                    log.warning("not pruning %s: %s", root, reason)
                continue
            gone.extend(missing)
        count, _ = self.catalog.delete_items(gone)
        return count  # their vectors are queued in the catalog; this run's last publication tombstones them

    def _vanished_samples(self, group: VanishedShards, report: IndexReport, force: bool) -> list[int]:
        ids = [item_id for shard in group.shards for item_id in self.catalog.prune_candidates(shard, set())[1]]
        limit = self.settings.prune_max_fraction
        if force or len(ids) <= limit * group.total:
            return ids
        reason = (
            f"{len(group.shards)} of its shards are gone with {len(ids)} of its {group.total} samples, more than "
            f"XMODAL_PRUNE_MAX_FRACTION={limit}; check the shards, then run again with --force-prune"
        )
        report.prunes_skipped.append((group.shard_set, reason))
        log.warning("not pruning %s: %s", group.shard_set, reason)
        return []

    def _prune_refusal(self, root: str, scan: Scan, total: int, missing: int, *, force: bool) -> str | None:
        """Why the items of ``root`` whose files were not seen must stay, or None when they may go."""
        if root in scan.errors:
            return "its walk met errors (see failures): a missing disk or unreadable folder is not a deletion"
        if not scan.seen.any_under(root):
            return "no file was found under it (an unmounted disk?); nothing was pruned"
        limit = self.settings.prune_max_fraction
        if not force and missing > limit * total:
            return (
                f"{missing} of its {total} items are gone, more than XMODAL_PRUNE_MAX_FRACTION={limit}; "
                "check the folder, then run again with --force-prune"
            )
        return None

    def _process(
        self,
        todo: list[SourceFile],
        active: list[VectorSpace],
        transcriber: Transcriber | None,
        coverage: CoverageLookup,
        report: IndexReport,
        ocr: TextReader | None = None,
        only_ocr: dict[str, int] | None = None,
    ) -> None:
        settings = self.settings
        only_ocr = only_ocr or {}
        same_content = self._same_content(coverage, active, ocr=ocr is not None)

        def indexed_without_ocr(path: str) -> Item | None:
            return self.catalog.get_item(only_ocr[path]) if path in only_ocr else None

        preparers = Preparers(
            images={space.name: space.encoder.prepare_image for space in active if space.embeds(Modality.IMAGE)},
            jpegs={space.name: space.encoder.prepare_jpeg for space in active if space.embeds(Modality.IMAGE)},
            audio={space.name: space.encoder.prepare_audio for space in active if space.embeds(Modality.AUDIO)},
            transcriber=transcriber,
            same_content=same_content,
            ocr=ocr,
            ocr_only=indexed_without_ocr if only_ocr else None,
        )
        known_paths = set(self.catalog.file_states(str(source.path) for source in todo))
        timings = Counter[str]()
        self.progress.start(len(todo))

        def timed_read(source: SourceFile) -> tuple[DecodedFile, float]:
            begin = time.perf_counter()
            return read_file(source, self.limits, preparers), time.perf_counter() - begin

        sizers = BatchSizers.for_settings(settings)
        if self.ray_address is not None:
            batches = encode_on_ray(
                self.ray_address, self.settings, todo, active, self.limits, transcribe=transcriber is not None
            )
            self._commit_encoded(batches, active, same_content, known_paths, sizers, report, timings)
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
                if len(batch) >= sizers.size:
                    since_save += self._flush(batch, active, sizers, report, timings)
                    batch = []
                if since_save >= settings.checkpoint_every:
                    self.spaces.save()
                    since_save = 0
            self._flush(batch, active, sizers, report, timings)
        report.timings.update(timings)
        report.batch_size = sizers.size

    def _same_content(
        self, coverage: CoverageLookup, active: list[VectorSpace], *, ocr: bool
    ) -> Callable[[str], Item | None]:
        def same_content(content_hash: str) -> Item | None:
            """An indexed copy whose vectors cover every active space (else the file is embedded afresh)."""
            original = self.catalog.item_with_content(content_hash)
            if original is None or original.modality is None:
                return None
            state = FileState(
                original.id,
                0,
                0,
                None,
                original.status,
                original.modality,
                has_text(original),
                original.ocr_engine is not None,
            )
            return original if covered(state, coverage(original.id), active, ocr=ocr) else None

        return same_content

    def _shards_on_ray(
        self,
        listing: Listing,
        active: list[VectorSpace],
        transcriber: Transcriber | None,
        scan: Scan,
        report: IndexReport,
    ) -> None:
        """Read and encode the deferred shards on Ray, one task per shard; commit what comes back here. A sample
        the catalog holds at the shard's version with every vector is left alone (a shard cut short by a crash
        is read again, and only its missing samples are encoded); one that failed is tried again."""
        assert self.ray_address is not None
        indexed: dict[str, dict[str, str | None]] = {}
        known_paths: set[str] = set()
        for shard in listing.deferred:  # what the catalog holds of each shard: one range query per shard
            states = self.catalog.sample_states(shard.address)
            coverage = self.catalog.spaces_by_item(state.item_id for _, state in states)
            known_paths.update(path for path, _ in states)
            indexed[shard.address] = {
                path: state.source_version
                for path, state in states
                if state.status != ItemStatus.FAILED and covered(state, coverage.get(state.item_id, ()), active)
            }
        tasks = [ShardTask(shard, indexed[shard.address]) for shard in listing.deferred]
        outcomes = encode_shards_on_ray(
            self.ray_address, self.settings, tasks, active, self.limits, transcribe=transcriber is not None
        )

        def batches() -> Iterator[EncodedBatch]:
            for outcome in outcomes:
                address = outcome.shard.address
                if outcome.error is not None:
                    listing.unlisted[address] = outcome.error
                    report.failed += 1
                    report.failures.append((address, outcome.error))
                    continue
                log.info("shard %s: %d samples read by worker %d", address, len(outcome.samples), outcome.worker_pid)
                listing.prune_roots.append(address)
                for sample in outcome.samples:
                    scan.seen.add(sample)
                scan.count += len(outcome.samples)
                report.scanned += len(outcome.samples)
                report.unchanged += len(outcome.unchanged)
                yield outcome.encoded

        timings = Counter[str]()
        same_content = self._same_content(coverage_lookup(self.catalog), active, ocr=False)
        sizers = BatchSizers.for_settings(self.settings)
        self._commit_encoded(batches(), active, same_content, known_paths, sizers, report, timings)
        for name, seconds in timings.items():
            report.timings[name] = report.timings.get(name, 0.0) + seconds

    def _commit_encoded(
        self,
        batches: Iterable[EncodedBatch],
        active: list[VectorSpace],
        same_content: Callable[[str], Item | None],
        known_paths: set[str],
        sizers: BatchSizers,
        report: IndexReport,
        timings: Counter[str],
    ) -> None:
        """Commit each batch encoded on Ray as it arrives (checkpointing as a local run does)."""
        since_save = 0
        begin = time.perf_counter()
        for encoded in batches:
            timings["ray_wait_s"] += time.perf_counter() - begin
            files: list[DecodedFile] = []
            vectors: list[dict[str, FileVectors]] = []
            for decoded, file_vectors in encoded:
                record = decoded.record
                original = (
                    reusable_original(decoded.source, record.content_hash, record.caption, same_content)
                    if record is not None and record.content_hash
                    else None
                )
                if original is not None:  # the rule a local run applies: keep the indexed vectors
                    decoded = dataclasses.replace(decoded, reuse_from=original.id)
                    file_vectors = embed_batch([decoded], active, sizers=sizers)[0]
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
        sizers: BatchSizers,
        report: IndexReport,
        timings: Counter[str],
    ) -> int:
        if not batch:
            return 0
        begin = time.perf_counter()
        vectors = embed_batch(batch, active, sizers=sizers)
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
        if decoded.ocr_ran:
            report.ocr_read += 1
            report.ocr_with_text += bool(decoded.record is not None and decoded.record.ocr_text)
        if decoded.transcribed:
            report.transcribed += 1
            report.transcripts_dropped += not (decoded.record is not None and decoded.record.transcript)
