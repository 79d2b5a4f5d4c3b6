"""Answering a query: every space that can embed a part is searched with it, the lexical space with the text,
the candidates are re-scored exactly against every source, fused, de-duplicated, optionally diversified, and
paged."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from xmodal.config import Settings
from xmodal.encoders.base import l2_normalise
from xmodal.encoders.speech import Segment, Transcript
from xmodal.errors import ConfigError, InvalidQueryError, NotFoundError, WeightsUnavailableError
from xmodal.modality import Modality
from xmodal.search.batching import EncodeBatcher
from xmodal.search.calibration import NullSamples, space_agreement
from xmodal.search.cursors import CursorSigner
from xmodal.search.embedding_cache import CacheKey, QueryEmbeddingCache
from xmodal.search.filter_plans import FilterPlans
from xmodal.search.fusion import Evidence, Fuser, Source, Weights, load_fitted_weights, ranked
from xmodal.search.lexical_evidence import LexicalEvidence, QueryTerms
from xmodal.search.ocr_match import OCR, ocr_match, ocr_origins
from xmodal.search.query import (
    Contribution,
    OcrMatch,
    PartKind,
    QueryPart,
    SearchQuery,
    SearchResult,
)
from xmodal.search.rerank import collapse_duplicates, maximal_marginal_relevance, similarity_matrix
from xmodal.search.retrieval import FilterPlan, search_space
from xmodal.spaces import SpaceSet, VectorSpace
from xmodal.store.catalog import Catalog, ItemKind, ResultItem
from xmodal.store.lexical import Field as LexicalField
from xmodal.store.lexical import stopwords_of

log = logging.getLogger(__name__)
LEXICAL = "lexical"


@dataclass
class SearchResponse:
    """The results, which spaces answered and which could not (with the reason), and the next page's cursor."""

    results: list[SearchResult]
    spaces_searched: list[str] = field(default_factory=list)
    spaces_unavailable: dict[str, str] = field(default_factory=dict)
    parts_ignored: dict[str, str] = field(default_factory=dict)  # query part label -> why no space could use it
    next_cursor: str | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage: encode, ann, fusion, rerank, ...


@dataclass
class _Run:
    """The state of one search while it is answered."""

    query: SearchQuery
    response: SearchResponse
    dense: dict[Source, np.ndarray] = field(default_factory=dict)  # source -> query vector
    lexical: list[Source] = field(default_factory=list)
    candidates: set[int] = field(default_factory=set)  # items found by a positive part
    item_vectors: dict[str, dict[int, list[tuple[int, np.ndarray]]]] = field(default_factory=dict)
    modalities: dict[int, str | None] = field(default_factory=dict)  # candidates found by a space: their modality
    # per dense source, the items its search found with exact scores: item id -> (best vector id, score)
    found: dict[Source, dict[int, tuple[int, float]]] = field(default_factory=dict)
    kinds: dict[int, ItemKind] = field(default_factory=dict)  # candidates' modality and content hash, once read
    best_vectors: dict[tuple[int, Source], int] = field(default_factory=dict)  # (item, dense source) -> its best
    terms: QueryTerms = field(default_factory=QueryTerms)  # the lexical terms of its texts, read once
    unavailable: list[WeightsUnavailableError] = field(default_factory=list)
    # text encodes started for this search and not yet taken: (space, encoder fingerprint, text) -> chunk vectors
    encoding: dict[CacheKey, Future[np.ndarray]] = field(default_factory=dict)


class PreparedSearch:
    """A query whose parts are encoded, for :meth:`Searcher.finish`, with the version of each space it was encoded
    for (the search runs on those versions: a query vector of one model never meets another model's index)."""

    def __init__(self, run: _Run, versions: Mapping[str, VectorSpace]) -> None:
        self.run = run
        self.versions = versions

    @property
    def query(self) -> SearchQuery:
        return self.run.query


class _Clock:
    """Adds the seconds spent in each ``with clock("stage"):`` block to a dict."""

    def __init__(self, timings: dict[str, float]) -> None:
        self._timings = timings

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self._timings[stage] = self._timings.get(stage, 0.0) + time.perf_counter() - started


def text_chunks(space: VectorSpace, text: str) -> list[str]:
    """The pieces a query text is encoded as in ``space`` (a long text: its chunks; their vectors are averaged)."""
    return [chunk.text for chunk in space.encoder.chunk(text)] or [text]


def mean_unit(vectors: np.ndarray) -> np.ndarray:
    """The unit-length mean of ``vectors`` (rows): a query's vector from its chunks' or windows'."""
    return l2_normalise(vectors.mean(axis=0).reshape(1, -1))[0]


def encode_part(space: VectorSpace, part: QueryPart, batcher: EncodeBatcher | None = None) -> np.ndarray:
    """The unit query vector of a text, image or audio ``part`` in ``space`` (a long text: the mean of its chunks;
    audio: the mean of its windows). ``batcher`` batches text encodes with other queries'."""
    encoder = space.encoder
    if part.kind is PartKind.TEXT:
        encode = batcher.encode if batcher is not None else encoder.encode_queries
        return mean_unit(encode(text_chunks(space, part.value)))
    if part.kind is PartKind.IMAGE:
        return mean_unit(encoder.encode_images([part.value]))
    if part.kind is PartKind.AUDIO:
        windows = encoder.prepare_audio(part.value.samples, part.value.sample_rate)
        return mean_unit(encoder.encode_prepared_audio([features for _, _, features in windows]))
    raise ValueError(f"{part.kind} parts are not encoded")


class Searcher:
    """Runs queries against a catalog, its vector spaces and its lexical index. Thread-safe."""

    def __init__(self, catalog: Catalog, spaces: SpaceSet, settings: Settings) -> None:
        self.catalog = catalog
        self.spaces = spaces
        self.settings = settings
        self.cursors = CursorSigner.for_home(settings.home)
        try:
            self._stopwords = stopwords_of(settings.lexical_language)
        except ValueError as exc:
            raise ConfigError(f"XMODAL_LEXICAL_LANGUAGE: {exc}.") from exc
        wait_s = settings.query_batch_wait_ms / 1000
        self._batchers = {
            space.name: EncodeBatcher(
                space.encoder.encode_queries, wait_s=wait_s, max_texts=settings.query_batch_max, name=space.name
            )
            for space in spaces
            if Modality.TEXT in space.encoder.modalities
        }
        # every batcher by the encoder it batches for (a switch of model adds one; queries of the old version,
        # still in flight, keep theirs); each holds its encoder, so an id is never reused while it is here
        self._by_encoder = {id(spaces[name].encoder): batcher for name, batcher in self._batchers.items()}
        self._batcher_lock = threading.Lock()
        self.query_cache = QueryEmbeddingCache(settings.query_cache_size)
        self._null_samples = NullSamples(catalog, size=settings.fusion_null_sample)
        # Per query modality, per space: fitted by `xmodal eval --fit-fusion` (none: every space counts 1).
        self.fusion_weights: Weights = load_fitted_weights(settings.home)
        self.filters = FilterPlans(
            catalog, spaces, selective_below=settings.filter_selective_below, entries=settings.filter_cache_entries
        )
        self._direct_encodes = threading.BoundedSemaphore(settings.search_concurrency)  # image and audio parts
        self.lexical = LexicalEvidence(catalog, settings, self._stopwords)

    @property
    def encode_batchers(self) -> dict[str, EncodeBatcher]:
        """Space name -> the batcher of its text query encodes."""
        return dict(self._batchers)

    def _batcher(self, space: VectorSpace) -> EncodeBatcher | None:
        """The batcher of the space's text query encodes; a new one when the space switched model."""
        if space.name not in self._batchers:
            return None
        with self._batcher_lock:
            batcher = self._by_encoder.get(id(space.encoder))
            if batcher is None:
                batcher = self._by_encoder[id(space.encoder)] = EncodeBatcher(
                    space.encoder.encode_queries,
                    wait_s=self.settings.query_batch_wait_ms / 1000,
                    max_texts=self.settings.query_batch_max,
                    name=space.name,
                )
                self._batchers[space.name] = batcher
            return batcher

    def warm_up_queries(self) -> None:
        """Encode one query in each text space whose model is loaded, so that no request pays for making the
        model's query copy (``query_precision``) or for priming its kernels."""
        for space in self.spaces:
            batcher = self._batcher(space)
            if batcher is not None and space.encoder.loaded:
                try:
                    batcher.encode(["warm up"])
                except Exception:  # a request meets the same error and reports it; the other spaces still warm up
                    log.exception("warming up the query encodes of space %s failed", space.name)

    def close(self) -> None:
        """Stop the encoder threads."""
        for batcher in self._by_encoder.values():
            batcher.close()

    @property
    def lexical_enabled(self) -> bool:
        return self.settings.lexical and self.catalog.lexical_supported

    def search(self, query: SearchQuery) -> SearchResponse:
        return self.finish(self.prepare(query))

    def prepare(self, query: SearchQuery) -> PreparedSearch:
        """Encode the query's parts (text encodes batch with other queries' on the encoder threads; image and
        audio encodes run at most ``search_concurrency`` at once). The CPU-bound rest is :meth:`finish`, which a
        server runs in its search slots, so queries waiting for the encoder do not hold a slot."""
        self.spaces.refresh()  # a nightly run may have published new indexes since the last query
        with self.spaces.pinned() as versions:  # one version of each space for the whole query (finish too)
            run = _Run(query, SearchResponse(results=[]))
            with _Clock(run.response.timings)("encode"):
                self._prepare_sources(run)
            return PreparedSearch(run, versions)

    def finish(self, prepared: PreparedSearch) -> SearchResponse:
        """Search, fuse, rerank and page a prepared query, on the versions of the spaces it was encoded for."""
        with self.spaces.pinned(prepared.versions):
            return self._finish(prepared.run)

    def _finish(self, run: _Run) -> SearchResponse:
        """:meth:`finish` inside the prepared query's versions."""
        query = run.query
        clock = _Clock(run.response.timings)
        if not run.dense and not run.lexical:
            if run.unavailable:  # no space could embed the query: the server lacks a model, not a client error
                raise run.unavailable[0]
            return run.response
        with clock("ann"):
            self._gather_candidates(run)
        with clock("fusion"):
            evidence, locations = self._evidence(run)
            kind = next((p.modality.value for p in query.parts if p.weight > 0 and p.modality is not None), "")
            fitted = self.fusion_weights.get(kind, {}) if query.space is None else {}  # one space: its own order
            fuser = Fuser(query.fusion, self.settings.rrf_k, fitted)
            fused = fuser.fuse(evidence)
            order = ranked(fused)
        if query.min_score is not None:
            order = [item_id for item_id in order if fused[item_id][0] >= query.min_score]
        order = order[: self.settings.max_candidates]  # the rerank below is quadratic in the candidates
        with clock("rerank"):
            order, folded = self._rerank(run, order, fused)
        page = order[query.offset : query.offset + query.k]
        if len(order) > query.offset + query.k and query.offset + query.k < self.settings.max_result_depth:
            run.response.next_cursor = self.cursors.encode(query.offset + query.k, query)
        with clock("metadata"):
            run.response.results = self._attach(run, page, fused, evidence, locations, folded)
        return run.response

    def _rerank(
        self, run: _Run, order: list[int], fused: dict[int, tuple[float, dict[Source, float]]]
    ) -> tuple[list[int], dict[int, list[int]]]:
        """Fold near-duplicates and diversify, as the query asks. Folding alone looks at the best-ranked
        candidates first, twice the page, and at four times as many while the page is not full: an item's fate
        depends only on those above it, so the page is the same as over every candidate, and its "+N" counts the
        duplicates among the candidates looked at."""
        query = run.query
        if query.diversity > 0:
            folded: dict[int, list[int]] = {}
            similarity = self._similarity(run, order)
            if query.collapse_duplicates:
                order, folded, similarity = self._collapse(run, order, similarity)
            order = maximal_marginal_relevance(
                order,
                scores={i: fused[i][0] for i in order},
                similarity=similarity,
                diversity=query.diversity,
                count=query.offset + query.k,
            )
            return order, folded
        if not query.collapse_duplicates:
            return order, {}
        wanted = query.offset + query.k + 1  # the page, and whether another follows
        size = min(len(order), 2 * wanted)
        while True:
            head = order[:size]
            kept, folded, _ = self._collapse(run, head, self._similarity(run, head))
            if len(kept) >= wanted or size >= len(order):
                return kept, folded
            size = min(len(order), 4 * size)

    def _similarity(self, run: _Run, order: list[int]) -> np.ndarray:
        """Pairwise similarity of ``order``'s items by their own-modality vectors (see ``rerank``)."""
        representatives = self._representatives(run, self._kinds(run, order))
        compared = {name for vectors in representatives.values() for name in vectors}
        return similarity_matrix(order, representatives, self._typical_similarities(compared))

    def _kinds(self, run: _Run, item_ids: list[int]) -> dict[int, ItemKind]:
        """Modality and content hash of ``item_ids``, read once per search."""
        missing = [item_id for item_id in item_ids if item_id not in run.kinds]
        if missing:
            run.kinds.update(self.catalog.item_kinds(missing))
        return {item_id: run.kinds[item_id] for item_id in item_ids if item_id in run.kinds}

    def _transcribed(self, run: _Run, item_ids: list[int]) -> set[int]:
        """The items among ``item_ids`` that have a speech transcript (read for the audio ones, and those whose
        modality the search does not know yet)."""
        audio = Modality.AUDIO.value
        maybe = [item_id for item_id in item_ids if run.modalities.get(item_id, audio) == audio]
        return {item_id for item_id, kind in self._kinds(run, maybe).items() if kind.transcribed} if maybe else set()

    def _collapse(
        self, run: _Run, order: list[int], similarity: np.ndarray
    ) -> tuple[list[int], dict[int, list[int]], np.ndarray]:
        """(kept ids, kept id -> ids folded into it, the kept ones' similarity matrix)."""
        hashes = {item_id: kind.content_hash for item_id, kind in self._kinds(run, order).items()}
        kept, folded = collapse_duplicates(
            order, similarity=similarity, hashes=hashes, threshold=self.settings.duplicate_threshold
        )
        positions = {item_id: position for position, item_id in enumerate(order)}
        keep = [positions[item_id] for item_id in kept]
        return kept, folded, similarity[np.ix_(keep, keep)]

    # sources ---------------------------------------------------------------------------------------------

    def _prepare_sources(self, run: _Run) -> None:
        query = run.query
        if query.space is not None and query.space != LEXICAL and query.space not in self.spaces:
            known = ", ".join([*self.spaces.names(), LEXICAL])
            raise NotFoundError(f"No space named '{query.space}'. Spaces: {known}.")
        if query.space == LEXICAL and not self.lexical_enabled:
            raise InvalidQueryError("The lexical space is off (XMODAL_LEXICAL) or not supported by this database.")
        for index, part in enumerate(query.parts):
            spaces = self._spaces_for(part, query.space)
            if query.space not in (None, LEXICAL) and not spaces and part.kind is not PartKind.ITEM:
                space = self.spaces[query.space]
                embeds = ", ".join(sorted(m.value for m in space.encoder.modalities))
                raise InvalidQueryError(f"Space '{space.name}' cannot embed {part.kind} queries; it embeds {embeds}.")
            used = False
            # A space with nothing published has no vector to compare with, so its model is not loaded (an empty
            # CLIP space would cost open_clip's import), unless no other space can take the part: then loading
            # it says why (missing weights, say) rather than "nothing indexed".
            holding = [s for s in spaces if s.stored_index() is not None]
            self._start_text_encodes(run, part, holding or spaces)
            for space in holding or spaces:
                vector = self._part_vector(run, space, part)
                if vector is not None:
                    used = True
                    run.dense[Source(space.name, index, part.label(index), part.weight)] = vector
                    if space.name not in run.response.spaces_searched:
                        run.response.spaces_searched.append(space.name)
            if part.kind is PartKind.TEXT and self.lexical_enabled and query.space in (None, LEXICAL):
                used = True
                run.lexical.append(Source(LEXICAL, index, part.label(index), part.weight))
                if LEXICAL not in run.response.spaces_searched:
                    run.response.spaces_searched.append(LEXICAL)
            if not used:
                run.response.parts_ignored[part.label(index)] = self._why_unused(run, part, spaces)
        if query.space is not None and query.space != LEXICAL and not run.dense:
            reason = run.response.spaces_unavailable.get(query.space, "no vectors for this query")
            raise InvalidQueryError(f"Space '{query.space}' cannot answer this query: {reason}.")

    @staticmethod
    def _why_unused(run: _Run, part: QueryPart, spaces: list[VectorSpace]) -> str:
        reasons = [
            f"{s.name}: {run.response.spaces_unavailable[s.name]}"
            for s in spaces
            if s.name in run.response.spaces_unavailable
        ]
        if reasons:
            return "; ".join(reasons)
        if not spaces:
            return f"no space embeds {part.kind} queries"
        return "no vectors in the spaces that embed it (nothing of this kind indexed yet)"

    def _spaces_for(self, part: QueryPart, only: str | None) -> list[VectorSpace]:
        if only == LEXICAL:
            return []
        candidates = [self.spaces[only]] if only is not None else list(self.spaces)
        if part.kind is PartKind.VECTOR:
            return [s for s in candidates if s.name == part.space]
        if part.kind is PartKind.ITEM:
            return candidates
        return [s for s in candidates if part.modality is not None and s.embeds(part.modality)]

    def _part_vector(self, run: _Run, space: VectorSpace, part: QueryPart) -> np.ndarray | None:
        """The query vector of ``part`` in ``space``, or None when this space cannot answer it."""
        if part.kind is PartKind.ITEM:
            return self._item_vector(space, int(part.value))
        if part.kind is PartKind.VECTOR:
            index = space.stored_index()
            vector = np.asarray(part.value, dtype=np.float32).reshape(-1)
            if index is None or vector.shape[0] != index.dim:
                raise InvalidQueryError(f"A vector for space '{space.name}' must have {space.encoder.dim} numbers.")
            return l2_normalise(vector.reshape(1, -1))[0]
        try:
            space.check_encoder()  # loads the encoder and refuses a space built by another model
        except WeightsUnavailableError as exc:
            if run.query.space is not None:
                raise
            run.response.spaces_unavailable[space.name] = str(exc).splitlines()[0]
            run.unavailable.append(exc)
            return None
        if part.kind is not PartKind.TEXT:
            with self._direct_encodes:
                return encode_part(space, part)
        key = self._text_key(space, part)
        vector = self.query_cache.get(key)
        if vector is None:
            started = run.encoding.pop(key, None)
            vector = encode_part(space, part, self._batcher(space)) if started is None else mean_unit(started.result())
            self.query_cache.put(key, vector)
        return vector

    @staticmethod
    def _text_key(space: VectorSpace, part: QueryPart) -> CacheKey:
        """What a text part's vector in ``space`` is kept under: the model's fingerprint tells two models apart."""
        return (space.name, space.encoder.fingerprint, str(part.value))

    def _start_text_encodes(self, run: _Run, part: QueryPart, spaces: list[VectorSpace]) -> None:
        """Hand ``part``'s text to the encoder thread of every space that will embed it before waiting for any, so
        that the models encode side by side and a query waits for the slowest one, not for each in turn."""
        if part.kind is not PartKind.TEXT or len(spaces) < 2:
            return
        for space in spaces:
            batcher = self._batcher(space)
            if batcher is None:
                continue
            try:
                space.check_encoder()
            except WeightsUnavailableError:
                continue  # said when the space's vector is asked for
            key = self._text_key(space, part)
            if key not in run.encoding and key not in self.query_cache:
                run.encoding[key] = batcher.submit(text_chunks(space, str(part.value)))

    def _item_vector(self, space: VectorSpace, item_id: int) -> np.ndarray | None:
        index = space.stored_index()
        ids = self.catalog.vector_ids_of_items(space.key, [item_id]).get(item_id)
        if index is None or not ids:
            if self.catalog.get_item(item_id) is None:
                raise NotFoundError(f"No item with id {item_id}.")
            return None
        _, vectors = index.vectors_of(np.asarray(ids))
        if len(vectors) == 0:
            return None  # indexed after the publication this server has loaded
        return mean_unit(vectors)

    # candidates and evidence -----------------------------------------------------------------------------

    def _gather_candidates(self, run: _Run) -> None:
        query = run.query
        excluded = {int(p.value) for p in query.parts if p.kind is PartKind.ITEM}
        pool = min(self._candidates_wanted(run), self.settings.max_candidates) + len(excluded)
        plans: dict[str, FilterPlan] = {}
        if self.filters.nothing_passes(query.item_filter):
            return  # the catalog knows no item passes: nothing to search
        selective = self.filters.selective(query.item_filter)
        for source, vector in run.dense.items():
            if source.weight <= 0:
                continue  # negative parts only push candidates down; they never bring any in
            space = self.spaces[source.space]
            if source.space not in plans:
                plans[source.space] = self.filters.plan(space, query.item_filter)
            snapshot = space.stored_index()
            exact = run.found.setdefault(source, {}) if snapshot is not None and snapshot.exhaustive else None
            for hit in search_space(space, vector, k=pool, plan=plans[source.space]):
                run.candidates.add(hit.item_id)
                run.modalities[hit.item_id] = hit.modality
                if exact is not None and hit.vector_id is not None:
                    exact[hit.item_id] = (hit.vector_id, hit.score)
        # With a dense source beside it, every candidate's share is scored exactly, a lexical hit or not
        fused = query.space is None and any(s.weight > 0 for s in run.dense)
        for source in run.lexical:
            if source.weight <= 0:
                continue
            text = query.parts[source.part].value
            for lexical_field in LexicalField:
                found = self.lexical.hits(
                    run.terms, text, lexical_field, pool, query.item_filter, selective, fused=fused
                )
                run.candidates.update(found)
        run.candidates -= excluded

    def _candidates_wanted(self, run: _Run) -> int:
        """How many candidates each source brings: a page and one more (is there a next page?) when one space is
        searched with one part and nothing reorders its hits, since its own order is then the answer; else
        ``fusion_candidates`` (at least twice the page), for fusion and reranking to choose from."""
        query = run.query
        page = query.offset + query.k
        alone = len(run.dense) + len(run.lexical) == 1 and query.space is not None
        if alone and not query.collapse_duplicates and query.diversity <= 0 and self._searched_exhaustively(run):
            return page + 1
        return max(self.settings.fusion_candidates, 2 * page)

    def _searched_exhaustively(self, run: _Run) -> bool:
        """Whether the run's dense spaces are searched exhaustively (flat segments: exact scores, each item's best
        vector among the hits), so their own order is the exact one. An approximate index (HNSW, IVF-PQ) gives
        more candidates to choose from, re-scored exactly."""
        for source in run.dense:
            snapshot = self.spaces[source.space].stored_index()
            if snapshot is not None and not snapshot.exhaustive:
                return False
        return True

    def _space_vectors(self, run: _Run, space: str, item_ids: list[int]) -> dict[int, list[tuple[int, np.ndarray]]]:
        """Item id -> its (vector id, vector) pairs in ``space``, read once per search."""
        cached = run.item_vectors.setdefault(space, {})
        missing = [i for i in item_ids if i not in cached]
        index = self.spaces[space].stored_index()
        if missing and index is not None:
            owned = self.catalog.vector_ids_of_items(self.spaces[space].key, missing)
            wanted = np.asarray([i for item_id in missing for i in owned.get(item_id, [])], dtype=np.int64)
            found, vectors = index.vectors_of(wanted)  # one vectorised read; unpublished ids are left out
            by_id = dict(zip(found.tolist(), vectors, strict=True))
            for item_id in missing:
                cached[item_id] = [(i, by_id[i]) for i in owned.get(item_id, []) if i in by_id]
        return cached

    def _evidence(self, run: _Run) -> tuple[dict[int, Evidence], dict[int, tuple[Source, int | None]]]:
        """Exact scores of every candidate against every source, and where each item matched best."""
        item_ids = sorted(run.candidates)
        evidence = {item_id: Evidence(item_id) for item_id in item_ids}
        best_vector = run.best_vectors
        for source, query_vector in run.dense.items():
            space = self.spaces[source.space]
            index = space.stored_index()
            if index is None:
                continue  # nothing published in this space yet
            calibration = self._null_samples.calibration(index, query_vector, key=space.key)
            # Fusing spaces, an item is judged against random items of its own modality, and a space's cross-modal
            # evidence counts as far as its towers agree; one space alone ranks by its own scores.
            fusing = run.query.space is None
            text_only = any(
                s.part == source.part and self.spaces[s.space].encoder.modalities == {Modality.TEXT} for s in run.dense
            )
            part = run.query.parts[source.part]
            agreement = space_agreement(space, part, text_space_searched=text_only) if fusing else {}
            # The items this source's own search found are scored already (exactly: see ``_Run.found``); the other
            # candidates' vectors are read, one product for all of them, then each item's best vector (the first
            # of equal ones).
            known = run.found.get(source, {})
            unknown = [item_id for item_id in item_ids if item_id not in known]
            owned = self._space_vectors(run, source.space, unknown) if unknown else {}
            read = [item_id for item_id in unknown if owned.get(item_id)]
            if read:
                scores = np.stack([vector for item_id in read for _, vector in owned[item_id]]) @ query_vector
                position = 0
                for item_id in read:
                    pairs = owned[item_id]
                    count = len(pairs)
                    best = position + (int(np.argmax(scores[position : position + count])) if count > 1 else 0)
                    evidence[item_id].raw[source] = float(scores[best])
                    best_vector[(item_id, source)] = pairs[best - position][0]
                    position += count
            for item_id in item_ids:
                if item_id in known:
                    best_vector[(item_id, source)], evidence[item_id].raw[source] = known[item_id]
            scored = [item_id for item_id in item_ids if source in evidence[item_id].raw]
            if not scored:
                continue
            raw = [evidence[item_id].raw[source] for item_id in scored]
            if calibration is None:
                calibrated = index.calibrated(np.asarray(raw, dtype=np.float32)).tolist()
            else:
                modalities = [run.modalities.get(item_id) if fusing else None for item_id in scored]
                calibrated = calibration.z_each(np.asarray(raw, dtype=np.float64), modalities)
            for item_id, value in zip(scored, calibrated, strict=True):
                modality = run.modalities.get(item_id)
                # An item only a lexical match found has no modality here: its least trusted pair counts.
                trust = agreement.get(modality, 1.0) if modality is not None else min(agreement.values(), default=1.0)
                evidence[item_id].calibrated[source] = trust * value
        for source in run.lexical:
            text = run.query.parts[source.part].value
            matched = self.lexical.shares(run.terms, text, item_ids, partial(self._transcribed, run))
            for item_id, (share, strength) in matched.items():
                evidence[item_id].raw[source] = share
                evidence[item_id].calibrated[source] = self.settings.lexical_top_z * strength
        locations: dict[int, tuple[Source, int | None]] = {}
        for item_id, found in evidence.items():
            # Where the item matched: its strongest positive source that points at a chunk or window.
            located = [s for s in found.calibrated if s.weight > 0 and (item_id, s) in best_vector]
            if located:
                source = max(located, key=lambda s: (s.weight * found.calibrated[s], s.space, s.part))
                locations[item_id] = (source, best_vector[(item_id, source)])
        return evidence, locations

    def _typical_similarities(self, names: set[str]) -> dict[str, float]:
        """Per space of ``names`` (those the candidates are compared in: already open), how alike two of its random
        items are (see :func:`similarity_matrix`)."""
        typical: dict[str, float] = {}
        for space in (s for s in self.spaces if s.name in names):
            index = space.stored_index()
            if index is not None and index.ntotal:
                typical[space.name] = self._null_samples.typical_similarity(index, key=space.key)
        return typical

    def _representatives(self, run: _Run, items: dict[int, ItemKind]) -> dict[int, dict[str, np.ndarray]]:
        """Per item, its mean vector in the spaces native to its modality (for duplicates and MMR): those that
        embed only that modality when there are any (`text` for texts), else those that embed it."""
        result: dict[int, dict[str, np.ndarray]] = {item_id: {} for item_id in items}
        native: dict[str, set[str]] = {}
        for modality in Modality:
            only = {s.name for s in self.spaces if s.encoder.modalities == {modality}}
            native[modality.value] = only or {s.name for s in self.spaces if s.embeds(modality)}
        for space in self.spaces:
            own = [i for i, item in items.items() if item.modality and space.name in native[item.modality]]
            if not own or space.stored_index() is None:
                continue
            for item_id, pairs in self._space_vectors(run, space.name, own).items():
                if item_id in result and pairs:
                    if len(pairs) == 1:  # the mean of one vector is that vector
                        mean = pairs[0][1].reshape(1, -1)
                    else:
                        mean = np.stack([vector for _, vector in pairs]).mean(axis=0, keepdims=True)
                    result[item_id][space.name] = l2_normalise(mean)[0]
        return result

    # results ---------------------------------------------------------------------------------------------

    def _attach(
        self,
        run: _Run,
        page: list[int],
        fused: dict[int, tuple[float, dict[Source, float]]],
        evidence: dict[int, Evidence],
        locations: dict[int, tuple[Source, int | None]],
        folded: dict[int, list[int]],
    ) -> list[SearchResult]:
        items = self.catalog.result_items(page)
        spans = self.catalog.resolve_vectors([v for _, v in (locations.get(i, (None, None)) for i in page) if v])
        results: list[SearchResult] = []
        for item_id in page:
            item = items.get(item_id)
            if item is None:  # deleted between search and lookup
                continue
            found = evidence[item_id]
            space_scores: dict[str, float] = {}
            for source, raw in found.raw.items():
                if source.weight > 0:
                    space_scores.setdefault(source.space, raw)
            match, time_span = None, None
            source, vector_id = locations.get(item_id, (None, None))
            hit = spans.get(vector_id) if vector_id is not None else None
            if source is not None and hit is not None and hit.origin != OCR:  # OCR spans come with ``ocr``
                match, time_span = self._locate(source.space, hit.start, hit.end, item)
            origins, ocr = self._ocr(run, item, found)
            explanation: tuple[Contribution, ...] = ()
            if run.query.explain:
                explanation = tuple(
                    Contribution(
                        s.space,
                        s.label,
                        found.raw[s],
                        found.calibrated[s],
                        s.weight,
                        value,
                        OCR if s in origins else None,
                    )
                    for s, value in sorted(fused[item_id][1].items(), key=lambda kv: (kv[0].part, kv[0].space))
                )
            results.append(
                SearchResult(
                    item_id=item.id,
                    score=fused[item_id][0],
                    modality=item.modality,
                    path=item.path,
                    media_type=item.media_type,
                    caption=item.caption,
                    text_excerpt=item.text_excerpt,
                    metadata=dict(item.user_metadata or {}),
                    width=item.width,
                    height=item.height,
                    space_scores=space_scores,
                    match=match,
                    time_span=time_span,
                    transcript=item.transcript,
                    duration=item.duration,
                    duplicates=tuple(folded.get(item_id, ())),
                    explanation=explanation,
                    ocr_text=item.ocr_text,
                    ocr=ocr,
                )
            )
        return results

    def _ocr(self, run: _Run, item: ResultItem, found: Evidence) -> tuple[set[Source], OcrMatch | None]:
        """The sources that matched the words read from ``item``, and the lines they matched."""
        if not item.ocr_lines:
            return set(), None
        positive = [s for s in found.raw if s.weight > 0]
        texts = {s: run.query.parts[s.part].value for s in positive if run.query.parts[s.part].kind is PartKind.TEXT}
        best = {s: run.best_vectors[(item.id, s)] for s in positive if (item.id, s) in run.best_vectors}
        origins = ocr_origins(self.catalog, item, positive, best, texts)
        if not origins:
            return set(), None
        chunk = next((span for span in origins.values() if span is not None), None)
        return set(origins), ocr_match(item, run.query.text, chunk)

    def _locate(
        self, space: str, start: int | None, end: int | None, item: ResultItem
    ) -> tuple[tuple[int, int] | None, tuple[float, float] | None]:
        """(character span, time span) of an item's best-matching chunk or window."""
        if start is None or end is None:
            return None, None
        if item.modality == Modality.AUDIO and self.spaces[space].embeds(Modality.AUDIO):
            return None, (start / 1000, end / 1000)  # an audio window, in milliseconds
        if item.modality == Modality.AUDIO and item.transcript and item.transcript_segments:
            transcript = Transcript(item.transcript, tuple(Segment(**s) for s in item.transcript_segments))
            return (start, end), transcript.time_of(start, end)
        return (start, end), None
