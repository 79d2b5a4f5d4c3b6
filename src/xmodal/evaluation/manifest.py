"""The dataset manifest ``xmodal eval`` reads: JSON Lines of items and queries.

    {"type": "item", "id": "img-0001", "file": "images/cat.png"}
    {"type": "item", "id": "doc-0001", "text": "A black cat."}
    {"type": "item", "id": "img-0002", "file": "images/dog.png", "caption": "A dog."}
    {"type": "query", "id": "q-0001", "text": "a cat", "relevant": ["img-0001"]}
    {"type": "query", "id": "q-0002", "file": "images/cat.png", "relevant": ["doc-0001"], "task": "image->caption"}

Files are relative to the manifest's folder (or absolute). An item is a file (with an optional caption, staged as
its sidecar) or a text; a query is a text or a
file (an image or audio clip) and names the items that answer it. Queries and relevant items fix the direction
(text->image, image->text, text->audio, audio->text, text->text).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from xmodal.errors import InvalidQueryError


@dataclass(frozen=True, slots=True)
class ManifestItem:
    id: str
    file: Path | None = None
    text: str | None = None
    caption: str | None = None  # a file item's caption (its sidecar when staged)


@dataclass(frozen=True, slots=True)
class ManifestQuery:
    id: str
    relevant: frozenset[str]
    text: str | None = None
    file: Path | None = None
    task: str | None = None  # a label grouping queries in the report (default: their direction)


@dataclass(slots=True)
class Manifest:
    items: dict[str, ManifestItem] = field(default_factory=dict)
    queries: list[ManifestQuery] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read and check a manifest; every problem is an ``InvalidQueryError`` naming its line."""
        if not path.is_file():
            raise InvalidQueryError(f"No manifest at {path}.")
        return cls.parse(path.read_text(encoding="utf-8").splitlines(), base=path.parent)

    @classmethod
    def parse(cls, lines: Iterable[str], *, base: Path) -> Manifest:
        manifest = cls()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidQueryError(f"manifest line {number}: not JSON ({exc.msg})") from exc
            manifest._add(entry, number, base)
        manifest._check()
        return manifest

    def _add(self, entry: object, number: int, base: Path) -> None:
        if not isinstance(entry, dict) or entry.get("type") not in {"item", "query"} or "id" not in entry:
            raise InvalidQueryError(f"manifest line {number}: need an object with 'type' (item or query) and 'id'")
        file = _path(entry.get("file"), base)
        text = entry.get("text")
        if (file is None) == (text is None) or (text is not None and not isinstance(text, str)):
            raise InvalidQueryError(f"manifest line {number}: give exactly one of 'file' or 'text'")
        if file is not None and not file.is_file():
            raise InvalidQueryError(f"manifest line {number}: no file at {file}")
        key = str(entry["id"])
        caption = entry.get("caption")
        if caption is not None and (file is None or not isinstance(caption, str)):
            raise InvalidQueryError(f"manifest line {number}: a 'caption' is a string, and only for a 'file' item")
        if entry["type"] == "item":
            if key in self.items:
                raise InvalidQueryError(f"manifest line {number}: item id '{key}' is used twice")
            self.items[key] = ManifestItem(key, file, text, caption)
            return
        relevant = entry.get("relevant")
        if not isinstance(relevant, list) or not relevant:
            raise InvalidQueryError(f"manifest line {number}: a query needs a non-empty 'relevant' list of item ids")
        task = entry.get("task")
        self.queries.append(ManifestQuery(key, frozenset(map(str, relevant)), text, file, str(task) if task else None))

    def _check(self) -> None:
        if not self.items or not self.queries:
            raise InvalidQueryError("the manifest needs at least one item and one query")
        for query in self.queries:
            unknown = sorted(query.relevant - self.items.keys())
            if unknown:
                raise InvalidQueryError(f"query '{query.id}' names unknown items: {', '.join(unknown[:5])}")


def _path(value: object, base: Path) -> Path | None:
    if value is None:
        return None
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else base / path


def write_manifest(path: Path, items: Iterable[ManifestItem], queries: Iterable[ManifestQuery]) -> int:
    """Write a manifest (files as absolute paths); returns the number of lines."""
    lines = []
    for item in items:
        entry = {"type": "item", "id": item.id}
        entry.update({"file": str(item.file)} if item.file else {"text": item.text})
        if item.caption:
            entry["caption"] = item.caption
        lines.append(json.dumps(entry, ensure_ascii=False))
    for query in queries:
        entry = {"type": "query", "id": query.id, "relevant": sorted(query.relevant)}
        entry.update({"file": str(query.file)} if query.file else {"text": query.text})
        if query.task:
            entry["task"] = query.task
        lines.append(json.dumps(entry, ensure_ascii=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)
