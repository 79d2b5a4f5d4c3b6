"""Building the shadow version of a space during ordinary index runs (see :mod:`xmodal.switching`).

After a run has done its own work, it embeds items the current version holds and the shadow does not yet, by the
shadow's model only, from the files under the run's roots, within what is left of ``--max-items``. The items'
other rows are never touched, so searches keep their results; the text an item was indexed with (its caption,
transcript, words read by OCR) comes from the catalog, so nothing is transcribed or read again. The shadow
publishes its own checkpoints, so an interrupted run loses at most ``checkpoint_every`` items; the next run (the
nightly cron job) simply continues. Once the shadow covers every item, the run makes it current.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import chain, islice

import numpy as np

from xmodal import switching
from xmodal.config import Settings
from xmodal.encoders.batching import BatchSizers
from xmodal.errors import WeightsUnavailableError
from xmodal.indexer.embed import embed_batch
from xmodal.indexer.reader import DecodedFile, Outcome, Preparers, ReadLimits, read_file
from xmodal.indexer.sources import SourceFile
from xmodal.modality import Modality
from xmodal.spaces import SpaceSet, VectorSpace
from xmodal.store.catalog import Catalog, NewEmbedding
from xmodal.store.manifest import read_manifest
from xmodal.store.models import Item, ItemStatus
from xmodal.store.version_rows import add_rows, items_lacking

log = logging.getLogger(__name__)
PAGE = 1000  # catalog items read at once while choosing what to embed


@dataclass
class ShadowRun:
    """What one run did for one space's shadow version."""

    version: int
    embedded: int = 0  # items given vectors by the new model in this run
    failed: int = 0  # items whose file could not be read again (they stay uncovered)
    left: int = 0  # items still to embed after this run
    promoted: bool = False
    unavailable: str | None = None  # why the shadow's model could not be used


def continue_shadows(
    settings: Settings,
    catalog: Catalog,
    spaces: SpaceSet,
    sources: Sequence[SourceFile],
    limits: ReadLimits,
    *,
    budget: int | None,
) -> dict[str, ShadowRun]:
    """Embed up to ``budget`` items (``None``: all) into each shadow version, from ``sources`` (the run's files);
    promote a shadow that then covers every item. The caller holds the writer lock."""
    runs: dict[str, ShadowRun] = {}
    by_path = {str(source.path): source for source in sources}
    for shadow in spaces.shadows():
        current = spaces[shadow.name]
        run = runs[shadow.name] = ShadowRun(shadow.version)
        shadow.reconcile()
        pending: Iterator[Item] = _items_to_embed(catalog, items_lacking(catalog, current.key, shadow.key), by_path)
        if budget is not None:
            pending = islice(pending, budget)
        first = next(pending, None)
        if first is not None:
            try:
                shadow.writer()  # loads the model (only when there is work) and registers the version
            except WeightsUnavailableError as exc:
                run.unavailable = str(exc).splitlines()[0]
                log.warning("space %s: the new version's model is not here: %s", shadow.name, run.unavailable)
                continue
            taken = _embed(settings, catalog, shadow, chain([first], pending), by_path, limits, run)
            budget = None if budget is None else budget - taken
        shadow.save(final=True, apply_queued=True)
        run.left = len(items_lacking(catalog, current.key, shadow.key))
        if run.left == 0 and read_manifest(shadow.directory) is not None:
            switching.promote(spaces, catalog, shadow.name)
            run.promoted = True
            log.info("space %s: the new version covers every item and is now current", shadow.name)
    return runs


def _items_to_embed(catalog: Catalog, missing: list[int], by_path: dict[str, SourceFile]) -> Iterator[Item]:
    """The items among ``missing`` whose files this run saw, read from the catalog a page at a time."""
    for start in range(0, len(missing), PAGE):
        page = missing[start : start + PAGE]
        items = catalog.get_items(page)
        for item_id in page:
            item = items.get(item_id)
            if item is not None and item.status == ItemStatus.OK and item.path in by_path:
                yield item


def _embed(
    settings: Settings,
    catalog: Catalog,
    shadow: VectorSpace,
    todo: Iterator[Item],
    by_path: dict[str, SourceFile],
    limits: ReadLimits,
    run: ShadowRun,
) -> int:
    """Embed the ``todo`` items into the shadow, a batch at a time; returns how many were taken."""
    encoder = shadow.encoder
    images = {shadow.name: encoder.prepare_image} if shadow.embeds(Modality.IMAGE) else {}
    preparers = Preparers(
        images=images,
        jpegs={shadow.name: encoder.prepare_jpeg} if images else {},
        audio={shadow.name: encoder.prepare_audio} if shadow.embeds(Modality.AUDIO) else {},
    )
    sizers = BatchSizers.for_settings(settings)
    since_save = taken = 0
    with ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="xmodal-shadow") as pool:
        while part := list(islice(todo, sizers.size)):
            taken += len(part)
            decoded = list(pool.map(lambda item: _read(item, by_path[item.path], limits, preparers), part))
            ready = [(item, file) for item, file in zip(part, decoded, strict=True) if file is not None]
            run.failed += len(part) - len(ready)
            if not ready:
                continue
            vectors = embed_batch([file for _, file in ready], [shadow], sizers=sizers)
            rows: list[tuple[int, NewEmbedding]] = []
            stacked: list[np.ndarray] = []
            for (item, _), per_space in zip(ready, vectors, strict=True):
                found = per_space.get(shadow.name)
                if found is None:
                    run.failed += 1
                    continue
                rows.extend((item.id, embedding) for embedding in found.embeddings)
                stacked.extend(found.vectors)
            if not rows:
                continue
            ids = add_rows(catalog, shadow.key, rows)
            kept = [position for position, vector_id in enumerate(ids) if vector_id is not None]
            if kept:
                shadow.writer().add(
                    np.asarray([ids[p] for p in kept], dtype=np.int64), np.stack([stacked[p] for p in kept])
                )
            run.embedded += len({rows[p][0] for p in kept})
            since_save += len(ready)
            if since_save >= settings.checkpoint_every:
                shadow.save()
                since_save = 0
    return taken


def _read(item: Item, source: SourceFile, limits: ReadLimits, preparers: Preparers) -> DecodedFile | None:
    """The file decoded for the shadow's model, with the text the item was indexed with (``None``: unreadable)."""
    decoded = read_file(source, limits, preparers)
    if decoded.outcome is not Outcome.DECODED or decoded.record is None:
        log.info("shadow build: %s could not be read again: %s", source.path, decoded.reason)
        return None
    if item.modality == Modality.AUDIO and item.transcript:
        decoded.text = item.transcript
    if item.ocr_text and decoded.record.ocr_text is None:
        decoded.record = replace(decoded.record, ocr_text=item.ocr_text)
    return decoded
