"""The engine: one object that opens a home, indexes folders into it and searches it.

>>> from xmodal import Engine
>>> with Engine.open("/tmp/xmodal-doctest") as engine:   # doctest: +SKIP
...     engine.index(["photos/"])
...     for result in engine.search("a dog on a beach", k=5):
...         print(result.score, result.path)
"""

from __future__ import annotations

import io
import math
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image

from xmodal import switching
from xmodal.config import FusionMethod, Settings
from xmodal.encoders import build_encoder
from xmodal.encoders.ocr import OcrLimits, TextReader
from xmodal.encoders.speech import Transcriber
from xmodal.errors import (
    CatalogInUseError,
    DecodeError,
    IndexLockedError,
    InvalidQueryError,
    NotFoundError,
    XmodalError,
)
from xmodal.importers.clip_retrieval import ClipRetrievalFolder, ImportReport, import_folder
from xmodal.indexer.decode import AudioLimits, ImageLimits, audio_supported, decode_audio, decode_image, to_rgb
from xmodal.indexer.locations import parse_root
from xmodal.indexer.lock import index_lock
from xmodal.indexer.runner import Indexer, IndexReport, Progress
from xmodal.modality import Modality
from xmodal.search.query import AudioClip, PartKind, QueryPart, SearchQuery, SearchResult
from xmodal.search.searcher import PreparedSearch, Searcher, SearchResponse
from xmodal.spaces import EncoderBuilder, SpaceSet
from xmodal.store.catalog import Catalog
from xmodal.store.filters import ItemFilter
from xmodal.store.models import Item
from xmodal.switching import SwitchState, VersionState

ImageInput = str | Path | bytes | Image.Image
AudioInput = str | Path | bytes | AudioClip


@dataclass
class SpaceStats:
    name: str
    encoder_spec: str
    vectors: int
    dim: int | None
    fingerprint: str | None
    index: str = "Flat"  # FAISS factory key of the published index
    tombstones: int = 0  # removed vectors the index still holds until its next compaction
    search_effort: dict[str, float | int | None] = field(default_factory=dict)  # efSearch/nprobe and recall
    version: int = 1  # the version answering queries (a switch of model makes a new one)
    versions: list[VersionState] = field(default_factory=list)  # current, shadow (being built), previous
    switch_progress: float | None = None  # share of the items the shadow covers, while a switch is under way


@dataclass
class EngineStats:
    home: str
    catalog_url: str
    items_by_modality: dict[str, int]
    items_by_status: dict[str, int]
    spaces: list[SpaceStats] = field(default_factory=list)


def home_id(home: Path) -> str:
    """The home's identity (a random id in ``home/home_id``, made on first use), which its catalog records."""
    path = home / "home_id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        staged = home / f".home_id.{uuid.uuid4().hex}"
        staged.write_text(uuid.uuid4().hex)
        try:
            os.link(staged, path)  # atomic: of two processes making one at once, one wins
        except FileExistsError:
            pass
        finally:
            staged.unlink()
        return path.read_text().strip()


class _PixelBudget:
    """The pixels one query's images may still take, all together."""

    def __init__(self, limit: int) -> None:
        self.limit = self.left = limit

    def spend(self, pixels: int) -> None:
        if pixels > self.left:
            raise InvalidQueryError(
                f"The query's images have more than {self.limit} pixels in all (XMODAL_MAX_QUERY_PIXELS): "
                "send fewer or smaller images."
            )
        self.left -= pixels


def _header_pixels(data: bytes) -> int:
    """Width x height from the image's header, without decoding it (0 when it is not an image: decoding says so)."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            return int(opened.width) * int(opened.height)
    except (OSError, ValueError, Image.DecompressionBombError):
        return 0


class Engine:
    """Index and search one xmodal home. Open with :meth:`open`; close when done (or use ``with``)."""

    def __init__(self, settings: Settings, catalog: Catalog, spaces: SpaceSet) -> None:
        self.settings = settings
        self.catalog = catalog
        self.spaces = spaces
        self._searcher = Searcher(catalog, spaces, settings)
        self.transcriber = Transcriber.from_settings(settings)
        self.text_reader = TextReader(
            OcrLimits(
                settings.ocr_max_pixels, settings.ocr_max_seconds, settings.ocr_max_boxes, settings.ocr_min_confidence
            ),
            settings.device,
        )

    @classmethod
    def open(
        cls,
        home: str | Path | None = None,
        *,
        settings: Settings | None = None,
        build_encoder: EncoderBuilder = build_encoder,
        **overrides: Any,
    ) -> Engine:
        """Open (creating if needed) the home at ``home``, or the one the settings/environment name.

        ``build_encoder`` makes each space's encoder from its spec; pass one that reuses loaded models to share
        them between engines.
        """
        if settings is None:
            settings = Settings(**({"home": home} if home is not None else {}), **overrides)
        elif home is not None or overrides:
            settings = settings.model_copy(update={**({"home": Path(home)} if home else {}), **overrides})
        settings.home.mkdir(parents=True, exist_ok=True)
        catalog = Catalog.open(settings.catalog_url, vector_hit_cache=settings.vector_hit_cache_size)
        try:
            catalog.claim_home(home_id(settings.home), str(settings.home))
        except CatalogInUseError:
            catalog.close()
            raise
        return cls(settings, catalog, SpaceSet.from_settings(settings, catalog, build_encoder))

    def close(self) -> None:
        self._searcher.close()
        self.spaces.save()
        self.catalog.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    # indexing --------------------------------------------------------------------------------------------

    def index(
        self,
        paths: Iterable[str | Path],
        *,
        progress: Progress | None = None,
        prune: bool = False,
        force_prune: bool = False,
        max_items: int | None = None,
        ray_address: str | None = None,
        on_plan: Callable[[str], None] | None = None,
    ) -> IndexReport:
        """Index files, folders, bucket prefixes (``s3://bucket/prefix``) and WebDataset shard sets
        (``shards/{000..009}.tar``); unchanged files already indexed cost one ``stat`` (or one listed entry) each.
        One indexer runs per home at a time: a second one gets ``IndexLockedError`` at once. ``prune`` forgets
        items under ``paths`` whose files are gone (never under a root whose walk or listing failed or found
        nothing, and at most ``prune_max_fraction`` of a root's items unless ``force_prune``); ``max_items`` caps
        the files processed in this run. ``ray_address``: decode and encode on a Ray cluster (``local`` starts one
        on this machine), committing here. ``on_plan`` is told of long work before it starts (how many audio
        files will be transcribed, and about how long it takes)."""
        indexer = Indexer(
            self.settings,
            self.catalog,
            self.spaces,
            progress,
            transcriber=self.transcriber,
            ray_address=ray_address,
            on_plan=on_plan,
            text_reader=self.text_reader,
        )
        with index_lock(self.settings.home, self.catalog):
            self.spaces.follow_switches()  # a switch another process started (or finished) since this engine looked
            try:
                roots = [parse_root(p) for p in paths]
                return indexer.run(roots, prune=prune, force_prune=force_prune, max_items=max_items)
            finally:
                self.spaces.release_writers()  # the lock goes: the next writer starts from what is on disk

    # searching -------------------------------------------------------------------------------------------

    def search(
        self,
        text: str | None = None,
        image: ImageInput | None = None,
        audio: AudioInput | None = None,
        **options: Any,
    ) -> list[SearchResult]:
        """The best items for a text, an image (a path, encoded bytes or a PIL image) and/or an audio clip
        (a path or encoded bytes). ``options`` are those of :meth:`build_query`."""
        return self.query(self.build_query(text=text, image=image, audio=audio, **options)).results

    @property
    def searcher(self) -> Searcher:
        """The engine's searcher (``xmodal eval --fit-fusion`` tries fusion weights on it)."""
        return self._searcher

    def query(self, query: SearchQuery) -> SearchResponse:
        """Run a prepared query; the response also says which spaces could not answer, and the next cursor."""
        return self._searcher.search(query)

    def prepare(self, query: SearchQuery) -> PreparedSearch:
        """The first half of :meth:`query`: its parts encoded (text encodes batch with concurrent queries')."""
        return self._searcher.prepare(query)

    def finish(self, prepared: PreparedSearch) -> SearchResponse:
        """The second half of :meth:`query`: search, fuse, rerank and page what :meth:`prepare` encoded."""
        return self._searcher.finish(prepared)

    def build_query(
        self,
        *,
        text: str | None = None,
        image: ImageInput | None = None,
        audio: AudioInput | None = None,
        parts: Sequence[QueryPart] = (),
        k: int | None = None,
        modalities: Sequence[Modality | str] | None = None,
        where: Mapping[str, str] | Sequence[str] | None = None,
        space: str | None = None,
        cursor: str | None = None,
        min_score: float | None = None,
        explain: bool = False,
        fusion: FusionMethod | str | None = None,
        diversity: float | None = None,
        collapse_duplicates: bool | None = None,
    ) -> SearchQuery:
        """Validate and decode a query. ``text``/``image``/``audio`` are shorthands for parts of weight 1; ``parts``
        adds weighted ones (``QueryPart.text("long sleeves", weight=-0.5)``, ``QueryPart.item(42)``, ...);
        ``where`` filters on item fields and metadata (``{"extension": "jpg"}`` or ``["camera=X100"]``)."""
        given: list[QueryPart] = []
        if text is not None:
            given.append(QueryPart.text(text))
        if image is not None:
            given.append(QueryPart.image(image))
        if audio is not None:
            given.append(QueryPart.audio(audio))
        given.extend(parts)
        if not given:
            raise InvalidQueryError("A query needs a text, an image, an audio clip, an item or a vector.")
        if not any(part.weight > 0 for part in given):
            raise InvalidQueryError("A query needs at least one part with a positive weight.")
        k = self.settings.default_k if k is None else k
        if not 1 <= k <= self.settings.max_k:
            raise InvalidQueryError(f"k must be between 1 and {self.settings.max_k} (XMODAL_MAX_K), got {k}.")
        try:
            wanted = [Modality(m).value for m in modalities] if modalities else None
            method = FusionMethod(fusion) if fusion is not None else self.settings.fusion
        except ValueError as exc:
            raise InvalidQueryError(f"{exc}; see the query's documentation for the accepted values.") from exc
        conditions = [f"{key}={value}" for key, value in where.items()] if isinstance(where, Mapping) else where
        if min_score is not None and not math.isfinite(min_score):
            raise InvalidQueryError(f"min_score must be a finite number, got {min_score}.")
        diversity = self.settings.diversity if diversity is None else diversity
        if not 0 <= diversity <= 1:
            raise InvalidQueryError(f"diversity must be between 0 and 1, got {diversity}.")
        pixels = _PixelBudget(self.settings.max_query_pixels)
        query = SearchQuery(
            parts=tuple(self._decode_part(part, pixels) for part in given),
            k=k,
            item_filter=ItemFilter.parse(conditions or [], wanted),
            space=space,
            min_score=min_score,
            explain=explain,
            fusion=method,
            diversity=diversity,
            collapse_duplicates=(
                self.settings.collapse_duplicates if collapse_duplicates is None else collapse_duplicates
            ),
        )
        return self._continue(query, cursor) if cursor else query

    def _continue(self, query: SearchQuery, cursor: str) -> SearchQuery:
        """The page of ``query`` that ``cursor`` points at (within ``max_result_depth``)."""
        offset = self._searcher.cursors.decode(cursor, query)
        depth = self.settings.max_result_depth
        if offset >= depth:
            raise InvalidQueryError(f"Results past rank {depth} are not served (XMODAL_MAX_RESULT_DEPTH).")
        return replace(query, offset=offset, k=min(query.k, depth - offset))

    def _decode_part(self, part: QueryPart, pixels: _PixelBudget) -> QueryPart:
        if not math.isfinite(part.weight) or part.weight == 0:
            raise InvalidQueryError(f"A part's weight must be a finite number other than 0, got {part.weight}.")
        if part.kind is PartKind.TEXT:
            value = str(part.value).strip()
            if not value:
                raise InvalidQueryError("The text query is empty.")
            if len(value) > self.settings.max_query_chars:
                raise InvalidQueryError(
                    f"The text query has {len(value)} characters; the limit is {self.settings.max_query_chars} "
                    "(XMODAL_MAX_QUERY_CHARS)."
                )
            return replace(part, value=value)
        if part.kind is PartKind.IMAGE:
            return replace(part, value=self._load_image(part.value, pixels))
        if part.kind is PartKind.AUDIO:
            return replace(part, value=self._load_audio(part.value))
        if part.kind is PartKind.VECTOR:
            if part.space not in self.spaces:
                raise NotFoundError(f"No space named '{part.space}' for the vector part.")
            try:
                vector = np.asarray(part.value, dtype=np.float32).reshape(-1)
            except (TypeError, ValueError) as exc:
                raise InvalidQueryError("A vector part must be a list of numbers.") from exc
            if not np.isfinite(vector).all() or not vector.any():
                raise InvalidQueryError("A vector part must be finite and not all zeros.")
            return replace(part, value=vector)
        return part

    def _load_image(self, image: ImageInput, pixels: _PixelBudget) -> Image.Image:
        if isinstance(image, Image.Image):
            pixels.spend(image.width * image.height)
            return to_rgb(image)
        data = self._query_bytes(image, "image")
        pixels.spend(_header_pixels(data))  # before decoding: a query's images share one budget
        try:
            limits = ImageLimits(
                self.settings.max_image_pixels, self.settings.svg_render_side, self.settings.svg_timeout_s
            )
            return decode_image(data, limits).image
        except DecodeError as exc:
            raise DecodeError(f"The query image could not be read: {exc}") from exc

    def _load_audio(self, audio: AudioInput) -> AudioClip:
        if isinstance(audio, AudioClip):  # already decoded (e.g. a query part reused across searches)
            return audio
        if not audio_supported():
            raise InvalidQueryError("Audio queries need the audio extra: pip install 'xmodal[audio]'.")
        data = self._query_bytes(audio, "audio clip")
        try:
            decoded = decode_audio(data, AudioLimits(self.settings.max_audio_seconds))
        except DecodeError as exc:
            raise DecodeError(f"The query audio could not be read: {exc}") from exc
        return AudioClip(decoded.samples, decoded.sample_rate)

    def _query_bytes(self, value: str | Path | bytes, what: str) -> bytes:
        if isinstance(value, str | Path):
            path = Path(value)
            if not path.is_file():
                raise NotFoundError(f"Query {what} not found: {path}")
            value = path.read_bytes()
        if len(value) > self.settings.max_upload_bytes:
            raise InvalidQueryError(
                f"The query {what} is {len(value)} bytes; the limit is {self.settings.max_upload_bytes} "
                "(XMODAL_MAX_UPLOAD_BYTES)."
            )
        if not value:
            raise InvalidQueryError(f"The query {what} is empty.")
        return value

    # catalog ---------------------------------------------------------------------------------------------

    def item(self, item_id: int) -> Item:
        """The catalog row of an item; ``NotFoundError`` if there is none."""
        item = self.catalog.get_item(item_id)
        if item is None:
            raise NotFoundError(f"No item with id {item_id}.")
        return item

    def stats(self) -> EngineStats:
        catalog_stats = self.catalog.stats()
        spaces = []
        for space in self.spaces:
            row = self.catalog.get_space(space.key)
            index = space.stored_index()
            versions = switching.state(self.spaces, self.catalog, space.name)
            spaces.append(
                SpaceStats(
                    name=space.name,
                    encoder_spec=row.encoder_spec if row else space.encoder.spec,
                    vectors=space.size,
                    dim=row.dim if row else None,
                    fingerprint=row.fingerprint if row else None,
                    index=index.index_key if index else "Flat",
                    tombstones=index.tombstones if index else 0,
                    search_effort=index.tuning.as_dict() if index else {},
                    version=space.version,
                    versions=list(versions.versions),
                    switch_progress=versions.progress,
                )
            )
        return EngineStats(
            home=str(self.settings.home),
            catalog_url=self.catalog.url if "@" not in self.catalog.url else "(database URL with credentials)",
            items_by_modality=catalog_stats.items_by_modality,
            items_by_status=catalog_stats.items_by_status,
            spaces=spaces,
        )

    def delete_items(self, item_ids: Sequence[int], *, publish: bool = True) -> int:
        """Forget items (catalog rows and vectors; their files stay); returns how many existed.

        The items leave the catalog at once, so no search returns them; their vectors are queued for the home's
        writer. With ``publish`` and no indexer running, this call takes the writer lock and publishes the
        deletion itself; otherwise (a server, or an indexer holding the lock) the next publication applies it.
        """
        count, _ = self.catalog.delete_items(item_ids)
        if publish:
            try:
                with index_lock(self.settings.home, self.catalog):
                    self.spaces.save(apply_queued=True)
                    self.spaces.release_writers()
            except IndexLockedError:
                pass  # the running indexer applies the queued deletions at its next publication
        return count

    def reload(self) -> None:
        """Load the newest publication of every space now (servers also pick them up in the background)."""
        self.spaces.refresh(wait=True)

    def readiness(self) -> dict[str, str]:
        """Per space: ``ready``, ``empty`` (nothing indexed yet) or why it cannot answer. Loads the encoders of
        spaces that hold vectors, so a server that reports ready answers its first query without a load."""
        states: dict[str, str] = {}
        for space in self.spaces:
            if space.size == 0:
                states[space.name] = "empty"
                continue
            try:
                space.check_encoder()
                states[space.name] = "ready"
            except XmodalError as exc:
                states[space.name] = str(exc).splitlines()[0]
        return states

    def versions(self) -> dict[str, dict[str, Any]]:
        """Per space that has switched or is switching model: its versions (number, role, model, vectors, items)
        and, while a switch is under way, the share of items the new version covers (``/readyz``, the page)."""
        summary: dict[str, dict[str, Any]] = {}
        for space in self.spaces:
            found = switching.state(self.spaces, self.catalog, space.name)
            if len(found.versions) < 2:
                continue
            summary[space.name] = {
                "versions": [asdict(version) for version in found.versions],
                "progress": found.progress,
                "covered": found.covered,
                "total": found.total,
            }
        return summary

    def drop_space(self, name: str) -> int:
        """Delete a space's vectors, every version of them (to re-index it from scratch)."""
        if name not in self.spaces:
            raise NotFoundError(f"No space named '{name}'. Spaces: {', '.join(self.spaces.names())}.")
        with index_lock(self.settings.home, self.catalog):
            return switching.drop(self.spaces, self.catalog, name)

    # changing a space's model ----------------------------------------------------------------------------

    def switch_space(self, name: str, encoder_spec: str) -> SwitchState:
        """Start building a new version of space ``name`` with ``encoder_spec``; the index runs build it (within
        ``max_items``, resumable) while searches keep using the current model, and make it current once it covers
        every item. ``IndexLockedError`` while an indexer runs."""
        with index_lock(self.settings.home, self.catalog):
            return switching.start(self.spaces, self.catalog, name, encoder_spec)

    def promote_space(self, name: str, *, force: bool = True) -> SwitchState:
        """Make the new version of ``name`` current now (``force``: even before it covers every item)."""
        with index_lock(self.settings.home, self.catalog):
            return switching.promote(self.spaces, self.catalog, name, force=force)

    def rollback_space(self, name: str) -> SwitchState:
        """Make the previous version of ``name`` current again."""
        with index_lock(self.settings.home, self.catalog):
            return switching.rollback(self.spaces, self.catalog, name)

    def forget_old_version(self, name: str) -> int:
        """Delete the previous version of ``name`` (no rollback after this); returns how many vectors went."""
        with index_lock(self.settings.home, self.catalog):
            return switching.forget_old(self.spaces, self.catalog, name)

    def cancel_switch(self, name: str) -> int:
        """Abandon the new version of ``name`` being built; returns how many vectors went."""
        with index_lock(self.settings.home, self.catalog):
            return switching.cancel(self.spaces, self.catalog, name)

    def import_clip_retrieval(
        self, folder: str | Path, *, space: str, encoder_spec: str, files: str | Path | None = None
    ) -> ImportReport:
        """Import a clip-retrieval output folder (its embeddings, metadata and, without embedding files, its
        ``image.index``) into ``space`` as vectors of ``encoder_spec``, without embedding anything; ``files``: the
        folder its ``image_path`` values are in (items outside it are served by their URL)."""
        found = ClipRetrievalFolder.open(Path(folder))
        with index_lock(self.settings.home, self.catalog):
            try:
                return import_folder(
                    found,
                    catalog=self.catalog,
                    spaces=self.spaces,
                    space=space,
                    encoder_spec=encoder_spec,
                    files=Path(files) if files is not None else None,
                    checkpoint_every=self.settings.checkpoint_every,
                )
            finally:
                self.spaces.release_writers()

    def switch_state(self, name: str) -> SwitchState:
        """The versions of ``name`` and how far the new one has come."""
        return switching.state(self.spaces, self.catalog, name)
