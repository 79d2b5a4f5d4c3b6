"""Full-text search over item names, captions, documents and transcripts (SQLite FTS5, BM25 ranking).

Besides the words, each row keeps their Metaphone codes (``sounds``), and a query also matches by sound: speech
recognisers mis-spell names and homophones ("deer" heard as "Dear", "doe" as "dough"), and a word that sounds the
same is still evidence. The table lives in the catalog database and is written in the same transaction as the
items, so the two never disagree. On databases other than SQLite the lexical space reports itself unavailable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

TABLE = "items_fts"
# Column weights for BM25: a word in the caption or file name says more than one deep in a long document, and a
# word that only sounds alike says less than the word itself.
_WEIGHTS = (2.0, 3.0, 1.0, 0.5)  # name, caption, body, sounds
_WORD = re.compile(r"\w+", re.UNICODE)


def sounds_of(text: str) -> str:
    """The Metaphone codes of the words of ``text`` ("a red deer" -> "A RT TR")."""
    import jellyfish

    codes = (jellyfish.metaphone(word) for word in _WORD.findall(text) if not word.isdigit())
    return " ".join(code for code in codes if code)


@dataclass(frozen=True, slots=True)
class LexicalDocument:
    item_id: int
    name: str
    caption: str | None
    body: str | None


def supported(dialect: str) -> bool:
    return dialect == "sqlite"


def match_expression(query: str, max_terms: int = 64) -> str | None:
    """An FTS5 query that matches any word of ``query``, or any word's sound in the ``sounds`` column (each term
    quoted, so no word is taken as an operator)."""
    words = list(dict.fromkeys(word.lower() for word in _WORD.findall(query)))[:max_terms]
    sounds = list(dict.fromkeys(sounds_of(" ".join(words)).split()))
    terms = [f'"{word}"' for word in words] + [f'sounds : "{code}"' for code in sounds]
    return " OR ".join(terms) or None


def replace_documents(session: Session, item_ids: Sequence[int], documents: Sequence[LexicalDocument]) -> None:
    """Drop the rows of ``item_ids`` and insert ``documents`` (inside the caller's transaction)."""
    if session.get_bind().dialect.name != "sqlite":
        return
    for start in range(0, len(item_ids), 500):
        part = list(item_ids[start : start + 500])
        session.execute(text(f"DELETE FROM {TABLE} WHERE rowid IN ({','.join(str(int(i)) for i in part)})"))
    if documents:
        session.execute(
            text(
                f"INSERT INTO {TABLE}(rowid, name, caption, body, sounds) "
                "VALUES (:item_id, :name, :caption, :body, :sounds)"
            ),
            [
                {
                    "item_id": d.item_id,
                    "name": d.name,
                    "caption": d.caption or "",
                    "body": d.body or "",
                    "sounds": sounds_of(f"{d.caption or ''} {d.body or ''}"),
                }
                for d in documents
            ],
        )


def search(
    connection: Connection, query: str, limit: int, within: Sequence[int] | None = None
) -> list[tuple[int, float]]:
    """(item id, BM25 score; higher is better) of the best ``limit`` matches, best first, ties by id; only among
    the items ``within`` when given."""
    expression = match_expression(query)
    if expression is None:
        return []
    weights = ", ".join(str(w) for w in _WEIGHTS)
    restrict = f"AND rowid IN ({','.join(str(int(i)) for i in within)})" if within is not None else ""
    if within is not None and not within:
        return []
    rows = connection.execute(
        text(
            f"SELECT rowid, -bm25({TABLE}, {weights}) AS score FROM {TABLE} WHERE {TABLE} MATCH :expression "
            f"{restrict} ORDER BY score DESC, rowid LIMIT :limit"
        ),
        {"expression": expression, "limit": limit},
    )
    return [(int(row[0]), float(row[1])) for row in rows]


def count(connection: Connection) -> int:
    return int(connection.execute(text(f"SELECT count(*) FROM {TABLE}")).scalar() or 0)
