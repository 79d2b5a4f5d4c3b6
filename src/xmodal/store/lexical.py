"""Full-text search over item names, captions, documents and transcripts, ranked like BM25.

SQLite uses an FTS5 table (BM25); PostgreSQL a table with a weighted ``tsvector`` and a GIN index (``ts_rank``).
Besides the words, each row keeps their Metaphone codes (``sounds``), and a query also matches by sound: speech
recognisers mis-spell names and homophones ("deer" heard as "Dear", "doe" as "dough"), and a word that sounds the
same is still evidence. The table lives in the catalog database and is written in the same transaction as the
items, so the two never disagree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from xmodal import ocr_text

TABLE = "items_fts"
# Column weights: a word in the caption or file name says more than one deep in a long document, and a word that
# only sounds alike says less than the word itself.
_SQLITE_WEIGHTS = "2.0, 3.0, 1.0, 0.5, 2.0"  # bm25() weights of name, caption, body, sounds, ocr
_POSTGRES_WEIGHTS = "{0.15, 0.3, 0.6, 1.0}"  # ts_rank() weights of D (sounds), C (body), B (name), A (caption)
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


def _terms(query: str, max_terms: int = 64) -> tuple[list[str], list[str]]:
    """(distinct lower-case words, distinct sound codes) of a query."""
    words = list(dict.fromkeys(word.lower() for word in _WORD.findall(query)))[:max_terms]
    return words, list(dict.fromkeys(sounds_of(" ".join(words)).split()))


def match_expression(query: str) -> str | None:
    """An FTS5 query that matches any word of ``query``, or any word's sound in the ``sounds`` column (each term
    quoted, so no word is taken as an operator)."""
    words, sounds = _terms(query)
    terms = [f'"{word}"' for word in words] + [f'sounds : "{code}"' for code in sounds]
    return " OR ".join(terms) or None


def replace_documents(session: Session, item_ids: Sequence[int], documents: Sequence[LexicalDocument]) -> None:
    """Drop the rows of ``item_ids`` and insert ``documents`` (inside the caller's transaction)."""
    dialect = session.get_bind().dialect.name
    if not supported(dialect):
        return
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
    connection: Connection, query: str, limit: int, within: Sequence[int] | None = None
) -> list[tuple[int, float]]:
    """(item id, score; higher is better) of the best ``limit`` matches, best first, ties by id; only among the
    items ``within`` when given."""
    if within is not None and not within:
        return []
    restrict = ",".join(str(int(i)) for i in within) if within is not None else None
    if connection.dialect.name == "postgresql":
        return _search_postgres(connection, query, limit, restrict)
    expression = match_expression(query)
    if expression is None:
        return []
    rows = connection.execute(
        text(
            f"SELECT rowid, -bm25({TABLE}, {_SQLITE_WEIGHTS}) AS score FROM {TABLE} WHERE {TABLE} MATCH :expression "
            f"{f'AND rowid IN ({restrict})' if restrict else ''} ORDER BY score DESC, rowid LIMIT :limit"
        ),
        {"expression": expression, "limit": limit},
    )
    return [(int(row[0]), float(row[1])) for row in rows]


def _search_postgres(connection: Connection, query: str, limit: int, restrict: str | None) -> list[tuple[int, float]]:
    words, sounds = _terms(query)
    parts = [f"plainto_tsquery('english', :w{i})" for i in range(len(words))]
    parts += [f"plainto_tsquery('simple', :w{i})" for i in range(len(words))]  # names are not stemmed
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
