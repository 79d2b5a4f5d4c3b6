"""Manifests: what is read, and a clear error naming the line for everything that is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from xmodal.errors import InvalidQueryError
from xmodal.evaluation.manifest import Manifest, ManifestItem, ManifestQuery, write_manifest


def test_round_trip(tmp_path: Path) -> None:
    image = tmp_path / "cat.png"
    image.write_bytes(b"x")
    items = [ManifestItem("img-1", file=image), ManifestItem("cap-1", text="a cat")]
    queries = [
        ManifestQuery("q1", frozenset({"img-1"}), text="a cat", task="caption->image"),
        ManifestQuery("q2", frozenset({"cap-1"}), file=image),
    ]
    write_manifest(tmp_path / "m.jsonl", items, queries)
    manifest = Manifest.load(tmp_path / "m.jsonl")
    assert list(manifest.items) == ["img-1", "cap-1"] and manifest.items["img-1"].file == image
    assert manifest.queries == queries


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"type": "item", "id": "a", "text": "x"}', "not json"], "line 2: not JSON"),
        (['{"type": "thing", "id": "a"}'], "line 1: need an object"),
        (['{"type": "item", "id": "a", "text": "x", "file": "f.png"}'], "exactly one of 'file' or 'text'"),
        (['{"type": "item", "id": "a", "file": "missing.png"}'], "no file at"),
        (['{"type": "item", "id": "a", "text": "x"}', '{"type": "item", "id": "a", "text": "y"}'], "used twice"),
        (['{"type": "item", "id": "a", "text": "x"}', '{"type": "query", "id": "q", "text": "x"}'], "non-empty"),
        (
            ['{"type": "item", "id": "a", "text": "x"}', '{"type": "query", "id": "q", "text": "x", "relevant": [1]}'],
            "unknown items: 1",
        ),
        (['{"type": "item", "id": "a", "text": "x"}'], "at least one item and one query"),
    ],
)
def test_bad_manifests_say_what_is_wrong(tmp_path: Path, lines: list[str], message: str) -> None:
    with pytest.raises(InvalidQueryError, match=message):
        Manifest.parse(lines, base=tmp_path)
