"""Indexing an S3 bucket, against a real S3 API: moto's server, started here on a loopback port, driven through
boto3 and s3fs with the usual AWS environment, exactly as a user's bucket would be.

Object reads are counted from the server's own request log: a re-run of an unchanged bucket lists, and reads
no object.
"""

from __future__ import annotations

import io
import json
import random
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.conftest import make_settings, random_image
from tests.indexer.conftest import S3_SECRET, S3Server
from xmodal.api.app import create_app
from xmodal.config import Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    import boto3

    name = f"media-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    random_image(random.Random(seed)).save(buffer, format="PNG")
    return buffer.getvalue()


def _upload(bucket: str, objects: dict[str, bytes]) -> None:
    import boto3

    client = boto3.client("s3")
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)


@pytest.fixture
def settings(tmp_path: Path, tiny_clip_dir: Path) -> Settings:
    return make_settings(tmp_path / "home", tiny_clip_dir)


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict]:
    """Runs ``xmodal index ARGS --json`` (Typer's runner); returns the report, with the exit code."""
    for key, value in {"HOME": settings.home, "CLIP_ENCODER": settings.clip_encoder, "DEVICE": "cpu",
                       "COLLAPSE_DUPLICATES": "false"}.items():  # fmt: skip
        monkeypatch.setenv(f"XMODAL_{key}", str(value))

    def run(*args: str) -> dict:
        from xmodal.cli import app

        result = CliRunner().invoke(app, ["index", *args, "--json"])
        start = result.stdout.index("{")
        return {**json.loads(result.stdout[start:]), "exit_code": result.exit_code}

    return run


def test_bucket_is_indexed_then_only_listed_until_it_changes(
    s3_server: S3Server, bucket: str, cli: Callable[..., dict], settings: Settings
) -> None:
    _upload(
        bucket,
        {
            "photos/a.png": _png(1),
            "photos/a.txt": b"a red kite over the harbour",
            "photos/a.json": json.dumps({"license": "cc-by", "year": 2021}).encode(),
            "photos/b.png": _png(2),
            "photos/sub/c.png": _png(3),
            "photos/notes.txt": b"a short note about the harbour",
        },
    )
    prefix = f"s3://{bucket}/photos"
    first = cli(prefix)
    assert first["exit_code"] == 0, first
    assert (first["indexed"], first["failed"]) == (4, 0)

    mark = len(s3_server.requests())
    second = cli(prefix)
    assert (second["indexed"], second["updated"], second["unchanged"]) == (0, 0, 4)
    assert s3_server.object_reads(bucket, since=mark) == 0  # listed and compared, nothing read
    assert s3_server.listings(bucket, since=mark) >= 1

    _upload(bucket, {"photos/b.png": _png(20)})  # same key, new bytes: a new ETag
    mark = len(s3_server.requests())
    third = cli(prefix)
    assert (third["updated"], third["unchanged"]) == (1, 3)
    assert 1 <= s3_server.object_reads(bucket, since=mark) <= 2  # that object only (a HEAD and a GET at most)

    import boto3

    boto3.client("s3").delete_object(Bucket=bucket, Key="photos/sub/c.png")
    fourth = cli(prefix, "--prune")
    assert (fourth["pruned"], fourth["unchanged"], fourth["exit_code"]) == (1, 3, 0)

    with Engine.open(settings=settings) as engine:
        paths = {result.path for result in engine.search("harbour", k=10)}
        assert f"{prefix}/a.png" in paths and f"{prefix}/sub/c.png" not in paths
        kite = engine.search("kite", k=10, where={"license": "cc-by"})
        assert [result.path for result in kite] == [f"{prefix}/a.png"]
        assert engine.item(kite[0].item_id).caption == "a red kite over the harbour"
    # the catalog keeps URLs and identities, never a credential
    assert S3_SECRET.encode() not in (settings.home / "catalog.db").read_bytes()


def test_a_prefix_that_cannot_be_listed_fails_and_is_not_pruned(
    s3_server: S3Server, bucket: str, cli: Callable[..., dict], settings: Settings
) -> None:
    import boto3

    _upload(bucket, {"keep/a.png": _png(4), "keep/b.png": _png(5)})
    prefix = f"s3://{bucket}/keep"
    assert cli(prefix)["indexed"] == 2
    client = boto3.client("s3")
    for key in ("keep/a.png", "keep/b.png"):
        client.delete_object(Bucket=bucket, Key=key)
    client.delete_bucket(Bucket=bucket)  # the listing now fails: NoSuchBucket

    report = cli(prefix, "--prune")
    assert report["exit_code"] == 1
    assert report["pruned"] == 0
    assert [path for path, _ in report["failures"]] == [prefix]
    assert "cannot list" in report["failures"][0][1]
    with Engine.open(settings=settings) as engine:
        assert engine.catalog.count_items() == 2  # kept: a failed listing proves nothing gone


def test_api_serves_bucket_items_and_their_thumbnails(
    s3_server: S3Server,
    bucket: str,
    settings: Settings,
    encoder_pool: Callable[[str, Settings], Encoder],
) -> None:
    body = _png(6)
    _upload(bucket, {"web/kite.png": body, "web/kite.txt": b"a kite"})
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        assert engine.index([f"s3://{bucket}/web"]).indexed == 1
        item_id = engine.search("kite", k=1)[0].item_id
        with TestClient(create_app(engine=engine)) as client:
            content = client.get(f"/items/{item_id}/content")
            assert content.status_code == 200 and content.content == body
            assert content.headers["content-type"] == "image/png"
            thumbnail = client.get(f"/items/{item_id}/thumbnail", params={"size": 16})
            assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"

    presigned = settings.model_copy(update={"presigned_urls": True})
    with Engine.open(settings=presigned, build_encoder=encoder_pool) as engine:
        with TestClient(create_app(engine=engine)) as client:
            redirect = client.get(f"/items/{item_id}/content", follow_redirects=False)
        assert redirect.status_code == 307
        location = redirect.headers["location"]
        assert location.startswith(f"{s3_server.endpoint}/{bucket}/web/kite.png?")
    import httpx

    assert httpx.get(location).content == body  # the store itself serves the signed URL
