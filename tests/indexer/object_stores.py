"""The scenarios every emulated object store (gs://, az://) is tested with: a prefix indexed, then only listed
until an object changes, then pruned; a shard set listed and not read when unchanged. Each store's test module
supplies its file system, its own prefix and how its emulator's request log is counted."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass

from fastapi.testclient import TestClient

from tests.conftest import random_image
from xmodal.api.app import create_app
from xmodal.engine import Engine


@dataclass(frozen=True)
class RequestCounts:
    """What a test counts in its emulator's request log."""

    mark: Callable[[], int]  # requests logged so far, every request made before the call included
    object_reads: Callable[[str, int], int]  # reads of objects (not listings) below a folder, after ``since``
    listings: Callable[[int], int]  # listings after ``since``


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    random_image(random.Random(seed)).save(buffer, format="PNG")
    return buffer.getvalue()


def prefix_is_indexed_then_only_listed_until_it_changes(
    engine: Engine, store: object, folder: str, scheme: str, counts: RequestCounts
) -> None:
    objects = {
        "photos/a.png": png(1),
        "photos/a.txt": b"a red kite over the harbour",
        "photos/a.json": json.dumps({"license": "cc-by"}).encode(),
        "photos/b.png": png(2),
        "photos/c.png": png(3),
        "photos/sub/d.png": png(4),
    }
    for key, body in objects.items():
        store.pipe(f"{folder}/{key}", body)  # type: ignore[attr-defined]
    prefix = f"{scheme}://{folder}/photos"

    first = engine.index([prefix])
    assert (first.indexed, first.failed) == (4, 0)
    mark = counts.mark()
    second = engine.index([prefix])
    assert (second.indexed, second.updated, second.unchanged) == (0, 0, 4)
    counts.mark()
    assert counts.object_reads(f"{folder}/photos", mark) == 0
    assert counts.listings(mark) >= 1

    store.pipe(f"{folder}/photos/b.png", png(20))  # type: ignore[attr-defined]  # a new version of the object
    mark = counts.mark()
    third = engine.index([prefix])
    assert (third.updated, third.unchanged) == (1, 3)
    counts.mark()
    assert 1 <= counts.object_reads(f"{folder}/photos", mark) <= 3  # that object only (its metadata and bytes)

    store.rm(f"{folder}/photos/sub/d.png")  # type: ignore[attr-defined]
    fourth = engine.index([prefix], prune=True)
    assert (fourth.pruned, fourth.unchanged, fourth.ok) == (1, 3, True)

    kite = engine.search("kite", k=10, where={"license": "cc-by"})
    assert [result.path for result in kite] == [f"{prefix}/a.png"]
    assert engine.item(kite[0].item_id).caption == "a red kite over the harbour"
    with TestClient(create_app(engine=engine)) as api:
        content = api.get(f"/items/{kite[0].item_id}/content")
        assert content.status_code == 200 and content.content == objects["photos/a.png"]  # streamed from the store
        assert api.get(f"/items/{kite[0].item_id}/thumbnail").headers["content-type"] == "image/jpeg"


def shard_set_is_listed_not_read_when_unchanged(
    engine: Engine, store: object, folder: str, scheme: str, counts: RequestCounts
) -> None:
    from tests.indexer.test_webdataset import write_shard

    for number in range(2):
        buffer = io.BytesIO()
        write_shard(buffer, number * 3, 3)
        store.pipe(f"{folder}/laion/{number:05d}.tar", buffer.getvalue())  # type: ignore[attr-defined]
    pattern = f"{scheme}://{folder}/laion/*.tar"
    assert engine.index([pattern]).indexed == 6
    mark = counts.mark()
    again = engine.index([pattern], prune=True)
    assert (again.unchanged, again.indexed, again.pruned) == (6, 0, 0)
    counts.mark()
    assert counts.object_reads(f"{folder}/laion", mark) == 0
    hit = engine.search("lantern", k=6)[0]
    assert hit.path.startswith(f"{scheme}://{folder}/laion/0000") and "#sample-" in hit.path
