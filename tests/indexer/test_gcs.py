"""Indexing a gs:// bucket against a real Google Cloud Storage JSON API: gcp-storage-emulator, started on a
loopback port, reached through gcsfs with ``STORAGE_EMULATOR_HOST`` as a user's client reaches an emulator.

Object reads are counted from the emulator's request log: a re-run of an unchanged prefix (or shard set) lists,
and reads no object.
"""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import make_settings
from tests.indexer.conftest import GCS_BUCKET, GcsServer
from tests.indexer.object_stores import (
    RequestCounts,
    prefix_is_indexed_then_only_listed_until_it_changes,
    shard_set_is_listed_not_read_when_unchanged,
)
from xmodal.config import Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine

# Not imported here: gcsfs picks its file system class at import, after the gcs_server fixture set its environment.
if importlib.util.find_spec("gcsfs") is None:
    pytest.skip("gs:// needs the gcs extra: pip install 'xmodal[gcs]'", allow_module_level=True)


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


def _counts(server: GcsServer) -> RequestCounts:
    # every object read in the bucket counts, whichever folder: this test's engine reads nothing else
    return RequestCounts(
        lambda: len(server.requests()), lambda _under, since: server.object_reads(since), server.listings
    )


def test_gcs_prefix_is_indexed_then_only_listed_until_it_changes(
    gcs_server: GcsServer, store: object, folder: str, engine: Engine
) -> None:
    prefix_is_indexed_then_only_listed_until_it_changes(engine, store, folder, "gs", _counts(gcs_server))


def test_gcs_shard_set_is_listed_not_read_when_unchanged(
    gcs_server: GcsServer, store: object, folder: str, engine: Engine
) -> None:
    pytest.importorskip("webdataset", reason="the cloud extra is not installed: pip install 'xmodal[cloud]'")
    shard_set_is_listed_not_read_when_unchanged(engine, store, folder, "gs", _counts(gcs_server))
