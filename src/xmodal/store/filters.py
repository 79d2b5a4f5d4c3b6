"""Item filters: which items a query may return. Turned into SQL by the catalog.

A filter is a set of ``key=value`` conditions, all of which must hold. Keys:

- ``modality``, ``media_type``: the item's columns;
- ``extension``: the file's extension (``jpg`` or ``.jpg``), case-insensitive;
- ``folder``: the item lies under this folder (absolute path);
- ``has_text``: ``true`` for images in which OCR read text, ``false`` for the others;
- ``text``: the words appear (case-insensitive) in the item's caption or in the text read from it;
- anything else: a key of the item's user metadata (its JSON sidecar), compared as text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, and_, cast, func, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from xmodal.errors import InvalidQueryError
from xmodal.store.models import Item, ItemStatus

COLUMN_KEYS = frozenset({"modality", "media_type", "extension", "folder", "has_text", "text"})
_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})


@dataclass(frozen=True, slots=True)
class ItemFilter:
    """Conditions on items; an empty filter lets every indexed item through."""

    conditions: tuple[tuple[str, str], ...] = ()
    modalities: frozenset[str] | None = None

    @classmethod
    def parse(cls, expressions: Iterable[str], modalities: Iterable[str] | None = None) -> ItemFilter:
        """From ``key=value`` strings, as the CLI and the API take them."""
        conditions = []
        for expression in expressions:
            key, sep, value = expression.partition("=")
            if not sep or not key.strip():
                raise InvalidQueryError(f"Filter '{expression}' is not of the form key=value.")
            conditions.append((key.strip(), value.strip()))
        return cls(tuple(sorted(conditions)), frozenset(modalities) if modalities else None)

    @property
    def empty(self) -> bool:
        return not self.conditions and self.modalities is None

    @property
    def modality_only(self) -> bool:
        """Whether the item's modality alone decides (no other condition): a search that knows its hits'
        modalities applies it without the catalog."""
        return not self.conditions and self.modalities is not None

    def clause(self) -> ColumnElement[bool]:
        """The SQL condition for indexed items that pass."""
        parts: list[ColumnElement[bool]] = [Item.status == ItemStatus.OK]
        if self.modalities is not None:
            parts.append(Item.modality.in_(sorted(self.modalities)))
        parts.extend(_condition(key, value) for key, value in self.conditions)
        return and_(*parts)


def _condition(key: str, value: str) -> ColumnElement[bool]:
    if key == "modality":
        return Item.modality == value
    if key == "media_type":
        return Item.media_type == value
    if key == "extension":
        suffix = value.lower() if value.startswith(".") else f".{value.lower()}"
        return func.lower(Item.path).like(f"%{escape_like(suffix)}", escape="\\")
    if key == "folder":
        return under_folder(value)
    if key == "has_text":
        return _has_text(value)
    if key == "text":
        pattern = f"%{escape_like(value.lower())}%"
        return or_(
            func.lower(Item.caption).like(pattern, escape="\\"), func.lower(Item.ocr_text).like(pattern, escape="\\")
        )
    return cast(Item.user_metadata[key].as_string(), String) == value


def _has_text(value: str) -> ColumnElement[bool]:
    flag = value.lower()
    if flag not in _TRUE | _FALSE:
        raise InvalidQueryError(f"Filter has_text={value}: use has_text=true or has_text=false.")
    present = and_(Item.ocr_text.is_not(None), Item.ocr_text != "")
    return present if flag in _TRUE else ~present


def under_folder(folder: str) -> ColumnElement[bool]:
    """Items at ``folder`` or below it, compared byte by byte (``/x/Photos`` never matches ``/x/photos/a``).

    A range on the path (``'/'`` and ``'0'`` are neighbours in ASCII, so every ``folder/...`` lies between), which
    the path index can answer; ``LIKE`` would ignore case on SQLite and not use the index.
    """
    prefix = folder.rstrip("/") or "/"
    if prefix == "/":
        return Item.path.startswith("/")
    path = _Bytewise(Item.path)
    return or_(Item.path == prefix, and_(path >= f"{prefix}/", path < f"{prefix}0"))


class _Bytewise(FunctionElement[str]):
    """A text column compared by its bytes: PostgreSQL databases may default to a linguistic collation."""

    type = String()
    inherit_cache = True
    name = "bytewise"


@compiles(_Bytewise)
def _bytewise_default(element: _Bytewise, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)  # SQLite compares bytes (BINARY) unless told otherwise


@compiles(_Bytewise, "postgresql")
def _bytewise_postgresql(element: _Bytewise, compiler: SQLCompiler, **kw: Any) -> str:
    return f'{compiler.process(element.clauses, **kw)} COLLATE "C"'


def escape_like(value: str) -> str:
    """``value`` with LIKE's wildcards escaped (for ``escape='\\'``)."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
