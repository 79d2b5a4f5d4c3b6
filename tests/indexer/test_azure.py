"""Indexing an az:// container against a real Azure Blob Storage API: Azurite (Microsoft's emulator, from npm),
started on a loopback port, reached through adlfs with ``AZURE_STORAGE_CONNECTION_STRING`` as a user's client
reaches a storage account.

Object reads are counted from Azurite's debug log: a re-run of an unchanged prefix (or shard set) lists, and
reads no object.
"""

from __future__ import annotations

import io
import json
import random
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_settings, random_image
from tests.indexer.conftest import AZURE_CONTAINER, AzuriteServer
from xmodal.api.app import create_app
from xmodal.config import Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine

pytest.importorskip("adlfs", reason="az:// needs adlfs: pip install 'xmodal[azure]'")


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    random_image(random.Random(seed)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def store(azurite_server: AzuriteServer) -> object:
    import fsspec

    return fsspec.filesystem("az", use_listings_cache=False)


@pytest.fixture
def folder(store: object) -> str:
    return f"{AZURE_CONTAINER}/{uuid.uuid4().hex[:12]}"  # this test's own prefix in the emulator's container


@pytest.fixture
def engine(tmp_path: Path, tiny_clip_dir: Path, encoder_pool: Callable[[str, Settings], Encoder]) -> Iterator[Engine]:
    settings = make_settings(tmp_path / "home", tiny_clip_dir, speech_model="")
    with Engine.open(settings=settings, build_encoder=encoder_pool) as opened:
        yield opened


def test_azure_prefix_is_indexed_then_only_listed_until_it_changes(
    azurite_server: AzuriteServer, store: object, folder: str, engine: Engine
) -> None:
    objects = {
        "photos/a.png": _png(1),
        "photos/a.txt": b"a red kite over the harbour",
        "photos/a.json": json.dumps({"license": "cc-by"}).encode(),
        "photos/b.png": _png(2),
        "photos/c.png": _png(3),
        "photos/sub/d.png": _png(4),
    }
    for key, body in objects.items():
        store.pipe(f"{folder}/{key}", body)  # type: ignore[attr-defined]
    prefix = f"az://{folder}/photos"

    first = engine.index([prefix])
    assert (first.indexed, first.failed) == (4, 0)
    mark = azurite_server.settled()
    second = engine.index([prefix])
    assert (second.indexed, second.updated, second.unchanged) == (0, 0, 4)
    assert azurite_server.object_reads(f"{folder}/photos", since=mark) == 0
    assert azurite_server.listings(since=mark) >= 1

    store.pipe(f"{folder}/photos/b.png", _png(20))  # type: ignore[attr-defined]  # a new ETag
    mark = azurite_server.settled()
    third = engine.index([prefix])
    assert (third.updated, third.unchanged) == (1, 3)
    azurite_server.settled()
    assert 1 <= azurite_server.object_reads(f"{folder}/photos", since=mark) <= 3  # that blob's properties and bytes

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


def test_azure_shard_set_is_listed_not_read_when_unchanged(
    azurite_server: AzuriteServer, store: object, folder: str, engine: Engine
) -> None:
    pytest.importorskip("webdataset", reason="the cloud extra is not installed: pip install 'xmodal[cloud]'")
    from tests.indexer.test_webdataset import write_shard

    for number in range(2):
        buffer = io.BytesIO()
        write_shard(buffer, number * 3, 3)
        store.pipe(f"{folder}/laion/{number:05d}.tar", buffer.getvalue())  # type: ignore[attr-defined]
    pattern = f"az://{folder}/laion/*.tar"
    assert engine.index([pattern]).indexed == 6
    mark = azurite_server.settled()
    again = engine.index([pattern], prune=True)
    assert (again.unchanged, again.indexed, again.pruned) == (6, 0, 0)
    azurite_server.settled()
    assert azurite_server.object_reads(f"{folder}/laion", since=mark) == 0
    hit = engine.search("lantern", k=6)[0]
    assert hit.path.startswith(f"az://{folder}/laion/0000") and "#sample-" in hit.path


def test_a_container_that_cannot_be_listed_fails_and_is_not_pruned(
    azurite_server: AzuriteServer, store: object, folder: str, engine: Engine
) -> None:
    store.pipe(f"{folder}/docs/a.txt", b"a lighthouse in a storm")  # type: ignore[attr-defined]
    assert engine.index([f"az://{folder}/docs"]).indexed == 1
    missing = f"az://no-such-container-{uuid.uuid4().hex[:8]}/docs"
    report = engine.index([f"az://{folder}/docs", missing], prune=True)
    assert report.failed >= 1 and not report.ok
    assert any(missing in path for path, _ in report.failures)
    assert engine.search("lighthouse", k=1)[0].path == f"az://{folder}/docs/a.txt"  # nothing pruned
