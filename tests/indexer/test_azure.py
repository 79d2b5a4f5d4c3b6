"""Indexing an az:// container against a real Azure Blob Storage API: Azurite (Microsoft's emulator, from npm),
started on a loopback port, reached through adlfs with ``AZURE_STORAGE_CONNECTION_STRING`` as a user's client
reaches a storage account.

Object reads are counted from Azurite's debug log: a re-run of an unchanged prefix (or shard set) lists, and
reads no object.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import make_settings
from tests.indexer.conftest import AZURE_CONTAINER, AzuriteServer
from tests.indexer.object_stores import (
    RequestCounts,
    prefix_is_indexed_then_only_listed_until_it_changes,
    shard_set_is_listed_not_read_when_unchanged,
)
from xmodal.config import Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine

pytest.importorskip("adlfs", reason="az:// needs adlfs: pip install 'xmodal[azure]'")


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


def _counts(server: AzuriteServer) -> RequestCounts:
    # Azurite writes its log asynchronously: a marker request settles it before anything is counted
    return RequestCounts(server.settled, lambda under, since: server.object_reads(under, since), server.listings)


def test_azure_prefix_is_indexed_then_only_listed_until_it_changes(
    azurite_server: AzuriteServer, store: object, folder: str, engine: Engine
) -> None:
    prefix_is_indexed_then_only_listed_until_it_changes(engine, store, folder, "az", _counts(azurite_server))


def test_azure_shard_set_is_listed_not_read_when_unchanged(
    azurite_server: AzuriteServer, store: object, folder: str, engine: Engine
) -> None:
    pytest.importorskip("webdataset", reason="the cloud extra is not installed: pip install 'xmodal[cloud]'")
    shard_set_is_listed_not_read_when_unchanged(engine, store, folder, "az", _counts(azurite_server))


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
