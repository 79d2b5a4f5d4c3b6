"""Indexing a gs:// bucket against a real Google Cloud Storage JSON API: gcp-storage-emulator, started on a
loopback port, reached through gcsfs with ``STORAGE_EMULATOR_HOST`` as a user's client reaches an emulator.

Object reads are counted from the emulator's request log: a re-run of an unchanged prefix (or shard set) lists,
and reads no object.
"""

from __future__ import annotations

import importlib.util
import io
import json
import random
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_settings, random_image
from tests.indexer.conftest import GCS_BUCKET, GcsServer
from xmodal.api.app import create_app
from xmodal.config import Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine

# Not imported here: gcsfs picks its file system class at import, after the gcs_server fixture set its environment.
if importlib.util.find_spec("gcsfs") is None:
    pytest.skip("gs:// needs the gcs extra: pip install 'xmodal[gcs]'", allow_module_level=True)


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    random_image(random.Random(seed)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def store(gcs_server: GcsServer) -> object:
    import fsspec

    fs = fsspec.filesystem("gs", use_listings_cache=False)
    assert type(fs).__name__ == "GCSFileSystem"  # the JSON API client, not the gRPC one no emulator answers
    return fs


@pytest.fixture
def folder(store: object) -> str:
    return f"{GCS_BUCKET}/{uuid.uuid4().hex[:12]}"  # this test's own prefix in the emulator's bucket


@pytest.fixture
def engine(tmp_path: Path, tiny_clip_dir: Path, encoder_pool: Callable[[str, Settings], Encoder]) -> Iterator[Engine]:
    settings = make_settings(tmp_path / "home", tiny_clip_dir, speech_model="")
    with Engine.open(settings=settings, build_encoder=encoder_pool) as opened:
        yield opened


def test_gcs_prefix_is_indexed_then_only_listed_until_it_changes(
    gcs_server: GcsServer, store: object, folder: str, engine: Engine
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
    prefix = f"gs://{folder}/photos"

    first = engine.index([prefix])
    assert (first.indexed, first.failed) == (4, 0)
    mark = len(gcs_server.requests())
    second = engine.index([prefix])
    assert (second.indexed, second.updated, second.unchanged) == (0, 0, 4)
    assert gcs_server.object_reads(since=mark) == 0 and gcs_server.listings(since=mark) >= 1

    store.pipe(f"{folder}/photos/b.png", _png(20))  # type: ignore[attr-defined]  # a new generation
    mark = len(gcs_server.requests())
    third = engine.index([prefix])
    assert (third.updated, third.unchanged) == (1, 3)
    assert 1 <= gcs_server.object_reads(since=mark) <= 3  # that object only (its metadata and its bytes)

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


def test_gcs_shard_set_is_listed_not_read_when_unchanged(
    gcs_server: GcsServer, store: object, folder: str, engine: Engine
) -> None:
    pytest.importorskip("webdataset", reason="the cloud extra is not installed: pip install 'xmodal[cloud]'")
    from tests.indexer.test_webdataset import write_shard

    for number in range(2):
        buffer = io.BytesIO()
        write_shard(buffer, number * 3, 3)
        store.pipe(f"{folder}/laion/{number:05d}.tar", buffer.getvalue())  # type: ignore[attr-defined]
    pattern = f"gs://{folder}/laion/*.tar"
    assert engine.index([pattern]).indexed == 6
    mark = len(gcs_server.requests())
    again = engine.index([pattern], prune=True)
    assert (again.unchanged, again.indexed, again.pruned) == (6, 0, 0)
    assert gcs_server.object_reads(since=mark) == 0
    hit = engine.search("lantern", k=6)[0]
    assert hit.path.startswith(f"gs://{folder}/laion/0000") and "#sample-" in hit.path
