"""Full-text search over item names, captions, documents and transcripts, ranked like BM25.

SQLite uses an FTS5 table (BM25); PostgreSQL a table with a weighted ``tsvector`` and a GIN index (``ts_rank``).
Besides the words, each row keeps their Metaphone codes (``sounds``), and a query also matches by sound: speech
recognisers mis-spell names and homophones ("deer" heard as "Dear", "doe" as "dough"), and a word that sounds the
same is still evidence. The table lives in the catalog database and is written in the same transaction as the
items, so the two never disagree.

A query can ask one field: the ``words`` (every column but ``sounds``) or the ``sounds`` alone, so a match by
sound can count for less than a match by the word itself. Stopwords of the query's language are dropped from the
query (the stored text is left as it is). :func:`ideal_of` is what a document holding every query term would
score (the sum of each term's best score alone), so a score over it says how much of the query a document
matched: a match on one common word of six is weak, whatever the best match in the corpus is.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from xmodal import ocr_text

TABLE = "items_fts"
_VERSION_KEY = "lexical_version"  # in catalog_meta: a new random token with every write to the table
# Column weights: a word in the caption or file name says more than one deep in a long document, and a word that
# only sounds alike says less than the word itself.
_SQLITE_WEIGHTS = "2.0, 3.0, 1.0, 0.5, 2.0"  # bm25() weights of name, caption, body, sounds, ocr
_POSTGRES_WEIGHTS = "{0.15, 0.3, 0.6, 1.0}"  # ts_rank() weights of D (sounds), C (body), B (name), A (caption)
_WEIGHTLESS = 1e-4  # a best score alone under this: the term's IDF was floored (see ``weightless``)
_WORD = re.compile(r"\w+", re.UNICODE)
_CODE = re.compile(r"^[A-Z0-9]+$")
_SEPARATORS = re.compile(r"[/\\._\-]+")  # a path's folders and name become words on every backend

# PostgreSQL's table; SQLite's is an FTS5 virtual table created in migration 0003. Migration 0005 adds an ``ocr``
# column to both (text read from images, with the words it stands for: see ``xmodal.ocr_text``), weighted as a name.
POSTGRES_DDL = (
    f"""CREATE TABLE {TABLE} (
        item_id BIGINT PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
        name TEXT NOT NULL DEFAULT '', caption TEXT NOT NULL DEFAULT '', body TEXT NOT NULL DEFAULT '',
        sounds TEXT NOT NULL DEFAULT '',
        document tsvector GENERATED ALWAYS AS (
            setweight(to_tsvector('english', caption), 'A') || setweight(to_tsvector('simple', name), 'B')
            || setweight(to_tsvector('english', body), 'C') || setweight(to_tsvector('simple', sounds), 'D')
        ) STORED
    )""",
    f"CREATE INDEX ix_{TABLE}_document ON {TABLE} USING GIN (document)",
)


class Field(StrEnum):
    """Which part of a lexical row a query matches: the words, or their Metaphone codes."""

    WORDS = "words"
    SOUNDS = "sounds"


@dataclass(frozen=True, slots=True)
class LexicalDocument:
    item_id: int
    name: str
    caption: str | None
    body: str | None
    ocr: str | None = None  # text read from the image


def supported(dialect: str) -> bool:
    return dialect in {"sqlite", "postgresql"}


def sounds_of(value: str) -> str:
    """The Metaphone codes of the words of ``value`` ("a red deer" -> "A RT TR")."""
    import jellyfish

    codes = (jellyfish.metaphone(word) for word in _WORD.findall(value) if not word.isdigit())
    return " ".join(code for code in codes if code)


@cache
def stopwords_of(language: str | None) -> frozenset[str]:
    """The stopwords of ``language`` (a name such as ``english`` or a code such as ``en``; empty: none)."""
    if not language:
        return frozenset()
    import stopwords

    try:
        return frozenset(word for word in stopwords.get_stopwords(language) if word)
    except stopwords.LanguageNotAvailable as exc:
        known = ", ".join(sorted(stopwords.AVAILABLE_LANGUAGES))
        raise ValueError(f"No stopwords for language '{language}'; choose one of {known}, or empty for none") from exc


def _terms(query: str, stop: frozenset[str] = frozenset(), max_terms: int = 64) -> tuple[list[str], list[str]]:
    """(distinct lower-case words, distinct sound codes) of a query, without its stopwords (all of them when the
    query is nothing but stopwords: "The Who" still finds The Who)."""
    words = list(dict.fromkeys(word.lower() for word in _WORD.findall(query)))
    content = [word for word in words if word not in stop] or words
    content = content[:max_terms]
    return content, list(dict.fromkeys(sounds_of(" ".join(content)).split()))


def match_expression(query: str, field: Field | None = None, stop: frozenset[str] = frozenset()) -> str | None:
    """An FTS5 query that matches any word of ``query`` (``Field.WORDS``: in any column but ``sounds``), any
    word's sound in the ``sounds`` column (``Field.SOUNDS``), or either (``None``). Each term is quoted, so no word
    is taken as an operator."""
    return _expression(*_terms(query, stop), field)


def _expression(words: Sequence[str], sounds: Sequence[str], field: Field | None) -> str | None:
    quoted_words, quoted_sounds = " OR ".join(f'"{w}"' for w in words), " OR ".join(f'"{c}"' for c in sounds)
    terms: list[str] = []
    if field in (None, Field.WORDS) and words:
        terms.append(f"(- {{sounds}} : ({quoted_words}))" if field is Field.WORDS else quoted_words)
    if field in (None, Field.SOUNDS) and sounds:
        terms.append(f"(sounds : ({quoted_sounds}))")
    return " OR ".join(terms) or None


def replace_documents(session: Session, item_ids: Sequence[int], documents: Sequence[LexicalDocument]) -> None:
    """Drop the rows of ``item_ids`` and insert ``documents`` (inside the caller's transaction), and give the table
    a new :func:`version`."""
    dialect = session.get_bind().dialect.name
    if not supported(dialect):
        return
    session.execute(
        text(
            "INSERT INTO catalog_meta(key, value) VALUES (:key, :value) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        ),
        {"key": _VERSION_KEY, "value": uuid.uuid4().hex},
    )
    key = "rowid" if dialect == "sqlite" else "item_id"
    for start in range(0, len(item_ids), 500):
        part = ",".join(str(int(i)) for i in item_ids[start : start + 500])
        session.execute(text(f"DELETE FROM {TABLE} WHERE {key} IN ({part})"))
    if documents:
        session.execute(
            text(
                f"INSERT INTO {TABLE}({key}, name, caption, body, sounds, ocr) "
                "VALUES (:item_id, :name, :caption, :body, :sounds, :ocr)"
            ),
            [
                {
                    "item_id": d.item_id,
                    "name": _SEPARATORS.sub(" ", d.name),
                    "caption": d.caption or "",
                    "body": d.body or "",
                    "sounds": sounds_of(f"{d.caption or ''} {d.body or ''} {ocr_text.clean(d.ocr or '')}"),
                    "ocr": ocr_text.searchable(d.ocr) if d.ocr else "",
                }
                for d in documents
            ],
        )


def search(
    connection: Connection,
    query: str,
    limit: int,
    within: Sequence[int] | None = None,
    *,
    field: Field | None = None,
    stop: frozenset[str] = frozenset(),
    common: frozenset[str] = frozenset(),
) -> list[tuple[int, float]]:
    """(item id, score; higher is better) of the best ``limit`` matches, best first, ties by id; only among the
    items ``within`` when given. ``field``: match only the words or only their sounds (default: either);
    ``stop``: words the query drops; ``common``: terms (words or sound codes) it leaves out unless it holds no
    other (see :func:`weightless`)."""
    if within is not None and not within:
        return []
    restrict = ",".join(str(int(i)) for i in within) if within is not None else None
    words, sounds = _terms(query, stop)
    if common:
        words = [word for word in words if word not in common] or words
        sounds = [code for code in sounds if code not in common] or sounds
    return _search_terms(connection, words, sounds, field, limit, restrict)


def ideal_of(scores: Sequence[float]) -> float:
    """What a document holding every term of a query would score in one field, from each term's best score alone
    there (:func:`term_scores` of :func:`ideal_terms`): their sum (0 when no term matches anything). A term no
    document holds (0) counts as much as the best-scoring one (it is rarer still): a match on the query's known
    words is then only part of the query, as it is ("a black bird that caws" is not fully matched by "A black
    bird." because no text says "caws")."""
    found = [score for score in scores if score > 0]
    return sum(found) + (len(scores) - len(found)) * max(found, default=0.0)


def ideal_terms(query: str, field: Field, stop: frozenset[str] = frozenset()) -> list[str]:
    """The terms of ``query`` that :func:`ideal_of` sums over in ``field``: its words, or their sound codes."""
    words, sounds = _terms(query, stop)
    return words if field is Field.WORDS else sounds


def weightless(score: float) -> bool:
    """Whether a term whose best score alone is ``score`` has no weight in BM25: SQLite's FTS5 floors an IDF of
    ``log((N - n + 0.5) / (n + 0.5))``, which is not positive once half the rows or more hold the term, to 1e-6
    (a score below 1e-5 at any column weight and term frequency). Such a term changes no ranking, and its postings
    are the longest to walk; a term that matches nothing scores 0 and is not weightless (it costs nothing)."""
    return 0 < score < _WEIGHTLESS


def term_scores(connection: Connection, terms: Sequence[str], field: Field) -> list[float]:
    """Each term's best score alone in ``field`` (0 when it matches nothing)."""
    scores = []
    for term in terms:
        single = ([term], []) if field is Field.WORDS else ([], [term])
        best = _search_terms(connection, *single, field, 1, None)
        scores.append(best[0][1] if best else 0.0)
    return scores


def version(connection: Connection) -> str | None:
    """A token that changes with every write to the table (``None``: not written since the upgrade that added it):
    scores computed under one token hold until it changes."""
    row = connection.execute(text("SELECT value FROM catalog_meta WHERE key = :key"), {"key": _VERSION_KEY}).first()
    return None if row is None else str(row[0])


def _search_terms(
    connection: Connection,
    words: Sequence[str],
    sounds: Sequence[str],
    field: Field | None,
    limit: int,
    restrict: str | None,
) -> list[tuple[int, float]]:
    if connection.dialect.name == "postgresql":
        return _search_postgres(connection, words, sounds, field, limit, restrict)
    expression = _expression(words, sounds, field)
    if expression is None:
        return []
    # ``+rowid``: the restriction is checked on the rows the match yields. A bare ``rowid IN (...)`` is handed to
    # FTS5, which then evaluates the whole match once per listed id (200 ids: ~70 times slower, same rows).
    rows = connection.execute(
        text(
            f"SELECT rowid, -bm25({TABLE}, {_SQLITE_WEIGHTS}) AS score FROM {TABLE} WHERE {TABLE} MATCH :expression "
            f"{f'AND +rowid IN ({restrict})' if restrict else ''} ORDER BY score DESC, rowid LIMIT :limit"
        ),
        {"expression": expression, "limit": limit},
    )
    return [(int(row[0]), float(row[1])) for row in rows]


def _search_postgres(
    connection: Connection,
    words: Sequence[str],
    sounds: Sequence[str],
    field: Field | None,
    limit: int,
    restrict: str | None,
) -> list[tuple[int, float]]:
    parts: list[str] = []
    if field in (None, Field.WORDS):
        parts += [f"plainto_tsquery('english', :w{i})" for i in range(len(words))]
        parts += [f"plainto_tsquery('simple', :w{i})" for i in range(len(words))]  # names are not stemmed
    if field in (None, Field.SOUNDS):
        parts += [f"to_tsquery('simple', '{code.lower()}:D')" for code in sounds if _CODE.match(code)]
    if not parts:
        return []
    rows = connection.execute(
        text(
            f"WITH q AS (SELECT {' || '.join(parts)} AS query) "
            f"SELECT item_id, ts_rank('{_POSTGRES_WEIGHTS}', document, q.query) AS score FROM {TABLE}, q "
            f"WHERE document @@ q.query {f'AND item_id IN ({restrict})' if restrict else ''} "
            "ORDER BY score DESC, item_id LIMIT :limit"
        ),
        {**{f"w{i}": word for i, word in enumerate(words)}, "limit": limit},
    )
    return [(int(row[0]), float(row[1])) for row in rows]


def count(connection: Connection) -> int:
    return int(connection.execute(text(f"SELECT count(*) FROM {TABLE}")).scalar() or 0)
