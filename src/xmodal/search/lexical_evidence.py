"""The lexical space's part of a search: its candidates, and how much of a query each candidate matched.

A share is an item's BM25 over that of a document holding every query term (the "ideal": the sum of each term's
best score alone), so a match on one common word of six is weak. Each term's best score alone is kept per server
until the full-text table is next written; the terms BM25 gives no weight are left out of the matches (see
:func:`xmodal.store.lexical.weightless`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from cachetools import LRUCache

from xmodal.config import Settings
from xmodal.store.catalog import Catalog
from xmodal.store.filters import ItemFilter
from xmodal.store.lexical import Field, ideal_of, ideal_terms, weightless


@dataclass
class QueryTerms:
    """What one search read of its query texts' terms, so it reads it once."""

    scores: dict[tuple[str, Field], dict[str, float]] = field(default_factory=dict)  # each term's best score alone
    weightless: dict[str, frozenset[str]] = field(default_factory=dict)  # text -> its terms BM25 gives no weight
    # (text, field) -> every item the text matches there (item id -> score), when its hits were all of them
    every_match: dict[tuple[str, Field], dict[int, float]] = field(default_factory=dict)


class LexicalEvidence:
    """Lexical candidates and shares over a catalog's full-text table. Thread-safe."""

    def __init__(self, catalog: Catalog, settings: Settings, stopwords: frozenset[str]) -> None:
        self.catalog = catalog
        self._stopwords = stopwords
        self._skip_weightless = settings.lexical_skip_weightless
        self._phonetic_weight = settings.lexical_phonetic_weight
        self._transcript_phonetic_weight = settings.lexical_transcript_phonetic_weight
        self._share_power = settings.lexical_share_power
        self._candidate_min_share = settings.lexical_candidate_min_share
        # (lexical table version, field, term) -> the term's best score alone
        self._kept: LRUCache[tuple[str | None, Field, str], float] = LRUCache(maxsize=settings.lexical_cache_size)
        self._lock = threading.Lock()

    def hits(
        self,
        terms: QueryTerms,
        text: str,
        lexical_field: Field,
        pool: int,
        item_filter: ItemFilter,
        selective: bool,
        *,
        fused: bool = False,
    ) -> list[int]:
        """The best ``pool`` lexical matches of ``text`` among the items the query's filter passes: searched within
        them when the filter is selective, else in growing pages until ``pool`` of them pass. ``fused``: the hits
        are candidates of a fused search, which then scores every candidate's share exactly; they are matched on
        the query's informative words only (see :meth:`_uninformative`)."""
        common = self._weightless(terms, text)
        left_out = self._uninformative(terms, text, lexical_field, common) if fused and item_filter.empty else None
        options = {"field": lexical_field, "stop": self._stopwords, "common": common | (left_out or frozenset())}
        if item_filter.empty:
            found = self.catalog.lexical_search(text, pool, **options)  # type: ignore[arg-type]
            if not left_out:  # else ranked by the informative words alone: not every match of the whole query
                self._note_if_every_match(terms, text, lexical_field, found, pool)
            return [i for i, _ in found]
        if selective:
            allowed = sorted(self.catalog.matching_ids(item_filter))
            found = self.catalog.lexical_search(text, pool, within=allowed, **options)  # type: ignore[arg-type]
            self._note_if_every_match(terms, text, lexical_field, found, pool)
            return [i for i, _ in sorted(found, key=lambda hit: (-hit[1], hit[0]))[:pool]]
        limit = pool
        while True:
            found = self.catalog.lexical_search(text, limit, **options)  # type: ignore[arg-type]
            passing = self.catalog.matching_ids(item_filter, within=[i for i, _ in found])
            kept = [(i, score) for i, score in found if i in passing]
            if len(kept) >= pool or len(found) < limit:
                self._note_if_every_match(terms, text, lexical_field, kept, pool)
                return [i for i, _ in kept[:pool]]
            limit *= 4

    @staticmethod
    def _note_if_every_match(
        terms: QueryTerms, text: str, lexical_field: Field, found: list[tuple[int, float]], pool: int
    ) -> None:
        """Keep the matches of ``text`` when they are all the items (that the filter passes) it matches at all:
        fewer than ``pool`` came back. Every candidate of the search passes the filter, so its share in this field
        is then known without asking the full-text table again."""
        if len(found) < pool:
            terms.every_match[(text, lexical_field)] = dict(found)

    def shares(
        self, terms: QueryTerms, text: str, item_ids: list[int], transcribed: Callable[[list[int]], set[int]]
    ) -> dict[int, tuple[float, float]]:
        """Item id -> (share, strength) of its lexical match of ``text``. The share, in [0, 1], is its BM25 over
        that of a document holding every query word; the strength, what the match is worth against a full match by
        the words (1), is the share to the power ``lexical_share_power``, times the weight of a match by sound
        alone where only the sounds matched: ``lexical_phonetic_weight`` in typed text,
        ``lexical_transcript_phonetic_weight`` in the items ``transcribed`` says have a speech transcript (asked only
        of the items that matched by sound, when the two weights differ). The strongest field counts."""
        matched: dict[int, tuple[float, float]] = {}
        for lexical_field in Field:
            ideal = self._ideal(terms, text, lexical_field)
            if ideal <= 0:
                continue
            every = terms.every_match.get((text, lexical_field))
            if every is not None:  # the hits were every match: an item not among them matches nothing here
                found = [(item_id, every[item_id]) for item_id in item_ids if item_id in every]
            else:
                found = self.catalog.lexical_search(
                    text,
                    len(item_ids),
                    item_ids,
                    field=lexical_field,
                    stop=self._stopwords,
                    common=self._weightless(terms, text),
                )
            by_sound = lexical_field is Field.SOUNDS
            weights_differ = self._transcript_phonetic_weight != self._phonetic_weight
            heard = transcribed([item_id for item_id, _ in found]) if by_sound and weights_differ else set()
            for item_id, score in found:
                share = min(1.0, score / ideal)
                weight = 1.0
                if by_sound:
                    weight = self._transcript_phonetic_weight if item_id in heard else self._phonetic_weight
                strength = weight * share**self._share_power
                if strength > matched.get(item_id, (0.0, 0.0))[1]:
                    matched[item_id] = (share, strength)
        return matched

    def _uninformative(
        self, terms: QueryTerms, text: str, lexical_field: Field, weightless: frozenset[str]
    ) -> frozenset[str]:
        """The commonest terms of ``text`` in ``lexical_field`` that together are worth less than
        ``lexical_candidate_min_share`` of a full match (by each term's best score alone). An item holding only them
        is a weak lexical match, found by the dense spaces if it is a good one; matching them would make the
        full-text search score every row that holds them, a cost that grows with the home. At least one term
        stays."""
        if self._candidate_min_share <= 0:
            return frozenset()
        scores = self._term_scores(terms, text, lexical_field)
        ideal = self._ideal(terms, text, lexical_field)
        matching = sorted(
            (score, term)
            for term in dict.fromkeys(ideal_terms(text, lexical_field, self._stopwords))
            if (score := scores[term]) > 0 and term not in weightless
        )
        left_out: list[str] = []
        worth = 0.0
        for score, term in matching[:-1]:  # commonest first; the most informative one always stays
            if worth + score > self._candidate_min_share * ideal:
                break
            worth += score
            left_out.append(term)
        return frozenset(left_out)

    def _ideal(self, terms: QueryTerms, text: str, lexical_field: Field) -> float:
        """What a document holding every term of ``text`` would score in ``lexical_field`` (see ``ideal_of``)."""
        scores = self._term_scores(terms, text, lexical_field)
        return ideal_of([scores[term] for term in ideal_terms(text, lexical_field, self._stopwords)])

    def _weightless(self, terms: QueryTerms, text: str) -> frozenset[str]:
        """The terms of ``text`` that BM25 gives no weight (``lexical_skip_weightless``), once per search: they are
        left out of its matches, unless nothing else of the query matches anything."""
        found = terms.weightless.get(text)
        if found is None:
            dropped: set[str] = set()
            for lexical_field in Field if self._skip_weightless else ():
                scores = self._term_scores(terms, text, lexical_field)
                common = {term for term, score in scores.items() if weightless(score)}
                if any(score > 0 for term, score in scores.items() if term not in common):  # something else matches
                    dropped |= common
            found = terms.weightless[text] = frozenset(dropped)
        return found

    def _term_scores(self, terms: QueryTerms, text: str, lexical_field: Field) -> dict[str, float]:
        """Each term of ``text``'s best score alone in ``lexical_field``, read once per search and kept until the
        full-text table is next written (a common word's costs a scan of every document holding it)."""
        read = terms.scores.get((text, lexical_field))
        if read is not None:
            return read
        wanted = ideal_terms(text, lexical_field, self._stopwords)
        version = self.catalog.lexical_version()
        with self._lock:
            known = {t: self._kept[key] for t in wanted if (key := (version, lexical_field, t)) in self._kept}
        missing = [term for term in dict.fromkeys(wanted) if term not in known]
        if missing:
            found = dict(zip(missing, self.catalog.lexical_term_scores(missing, lexical_field), strict=True))
            if self._kept.maxsize and self.catalog.lexical_version() == version:  # no write meanwhile
                with self._lock:
                    for term, score in found.items():
                        self._kept[(version, lexical_field, term)] = score
            known.update(found)
        terms.scores[(text, lexical_field)] = known
        return known
