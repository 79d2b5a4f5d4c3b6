"""WebDataset shards as a source, written with the ``webdataset`` package's own writer: each sample is one item
addressed ``shard#key``, with its caption and its JSON metadata; unchanged shards are not read again."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_settings, random_image
from tests.indexer.conftest import S3Server
from xmodal.api.app import create_app
from xmodal.config import Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine

webdataset = pytest.importorskip("webdataset", reason="the cloud extra is not installed: pip install 'xmodal[cloud]'")

WORDS = ["kite", "harbour", "lantern", "meadow", "castle", "bicycle", "river", "forest"]


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    random_image(random.Random(seed)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_shard(path: Path | io.BytesIO, first: int, count: int, *, corrupt: int | None = None) -> None:
    """``count`` samples (PNG, caption, JSON metadata) from number ``first``; sample ``corrupt`` holds a JPEG
    member that is not a JPEG."""
    stream = path if isinstance(path, io.BytesIO) else path.open("wb")
    with webdataset.TarWriter(stream) as writer:
        for number in range(first, first + count):
            sample = {
                "__key__": f"sample-{number:04d}",
                "txt": f"a {WORDS[number % len(WORDS)]} at dusk",
                "json": {"license": "cc-by" if number % 2 == 0 else "cc0", "number": number},
            }
            if number == corrupt:
                sample["jpg"] = b"\xff\xd8\xff\xe0 this is not a jpeg at all"
            else:
                sample["png"] = _png(number)
            writer.write(sample)
    if not isinstance(path, io.BytesIO):
        stream.close()


@pytest.fixture
def settings(tmp_path: Path, tiny_clip_dir: Path) -> Settings:
    return make_settings(tmp_path / "home", tiny_clip_dir)


@pytest.fixture
def engine(settings: Settings, encoder_pool: Callable[[str, Settings], Encoder]) -> Engine:
    with Engine.open(settings=settings, build_encoder=encoder_pool) as opened:
        yield opened


def test_shard_set_indexes_each_sample_once_and_skips_unchanged_shards(engine: Engine, tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    write_shard(shards / "part-000.tar", 0, 3, corrupt=1)
    write_shard(shards / "part-001.tar", 3, 3)
    pattern = str(shards / "part-{000..001}.tar")

    first = engine.index([pattern])
    assert (first.indexed, first.failed, first.scanned) == (5, 1, 6)
    [(path, reason)] = first.failures
    assert path == f"{shards}/part-000.tar#sample-0001"
    assert "corrupt" in reason

    second = engine.index([pattern])
    assert (second.indexed, second.updated, second.failed, second.unchanged) == (0, 0, 0, 6)
    assert second.vectors_added == 0

    results = engine.search("kite at dusk", k=10)
    keys = {result.path.rpartition("#")[2] for result in results}
    assert keys <= {f"sample-{n:04d}" for n in (0, 2, 3, 4, 5)} and len(keys) == 5
    assert all(result.path.startswith(f"{shards}/part-00") for result in results)
    licensed = {result.path.rpartition("#")[2] for result in engine.search("dusk", k=10, where={"license": "cc0"})}
    assert licensed == {"sample-0003", "sample-0005"}
    item = engine.item(next(r.item_id for r in results if r.path.endswith("#sample-0004")))
    assert item.caption == "a castle at dusk" and item.user_metadata == {"license": "cc-by", "number": 4}

    write_shard(shards / "part-001.tar", 3, 4)  # one more sample: only this shard is read again
    third = engine.index([pattern], prune=True)
    assert (third.indexed, third.updated, third.unchanged, third.pruned) == (1, 3, 3, 0)
    write_shard(shards / "part-001.tar", 3, 2)  # sample-0005 and -0006 are gone from the shard
    fourth = engine.index([glob_of(shards)], prune=True, force_prune=True)  # 2 of the shard's 4: past the share
    assert (fourth.pruned, fourth.unchanged) == (2, 3)


def glob_of(shards: Path) -> str:
    return str(shards / "part-*.tar")


def test_a_shard_cut_short_is_read_again_and_nothing_duplicates(engine: Engine, tmp_path: Path) -> None:
    """A run that stopped mid-shard (here by --max-items; a kill -9 leaves the same catalog) left the shard
    incomplete: the next run reads it again, keeps what was committed and adds the rest, once."""
    shard = tmp_path / "one.tar"
    write_shard(shard, 0, 4)
    first = engine.index([str(shard)], max_items=3)
    assert (first.indexed, first.deferred) == (3, 1)
    second = engine.index([str(shard)])
    assert (second.indexed, second.unchanged) == (1, 3)
    third = engine.index([str(shard)])
    assert (third.indexed, third.unchanged) == (0, 4)
    assert engine.catalog.count_items() == 4


def test_a_truncated_shard_fails_and_keeps_its_items(engine: Engine, tmp_path: Path) -> None:
    shard = tmp_path / "cut.tar"
    write_shard(shard, 0, 3)
    assert engine.index([str(shard)]).indexed == 3
    shard.write_bytes(shard.read_bytes()[:1500])  # cut inside the first member
    report = engine.index([str(shard)], prune=True)
    assert report.pruned == 0 and report.failed == 1
    assert report.failures[0][0] == str(shard) and "cannot read shard" in report.failures[0][1]
    assert engine.catalog.count_items() == 3


def test_shards_in_a_bucket_are_listed_not_read_when_unchanged(
    s3_server: S3Server,
    engine: Engine,
) -> None:
    import uuid

    import boto3

    bucket = f"shards-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    for number in range(2):
        buffer = io.BytesIO()
        write_shard(buffer, number * 3, 3)
        client.put_object(Bucket=bucket, Key=f"laion/{number:05d}.tar", Body=buffer.getvalue())
    pattern = f"s3://{bucket}/laion/*.tar"

    first = engine.index([pattern])
    assert (first.indexed, first.failed) == (6, 0)
    mark = len(s3_server.requests())
    second = engine.index([pattern])
    assert (second.unchanged, second.indexed) == (6, 0)
    assert s3_server.object_reads(bucket, since=mark) == 0

    with TestClient(create_app(engine=engine)) as api:
        hit = engine.search("lantern", k=6)[0]
        assert hit.path.startswith(f"s3://{bucket}/laion/0000")
        content = api.get(f"/items/{hit.item_id}/content")
        key = hit.path.rpartition("#")[2]
        assert content.status_code == 200 and content.content == _png(int(key.split("-")[1]))
        assert api.get(f"/items/{hit.item_id}/thumbnail").headers["content-type"] == "image/jpeg"
        assert json.loads(api.get(f"/items/{hit.item_id}").content)["path"] == hit.path


def test_a_vanished_shard_is_pruned_only_when_its_whole_set_was_listed(engine: Engine, tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    for number in range(4):
        write_shard(shards / f"part-{number:03d}.tar", number * 2, 2)
    assert engine.index([glob_of(shards)]).indexed == 8

    (shards / "part-003.tar").unlink()
    kept = engine.index([glob_of(shards)])  # without --prune nothing goes
    assert (kept.pruned, kept.unchanged, engine.catalog.count_items()) == (0, 6, 8)

    (shards / "part-002.tar").unlink()
    other = tmp_path / "elsewhere"  # a second pattern of the set that cannot be listed: nothing of the set goes
    failing = engine.index([f"{tmp_path}/{{shards/part-*.tar,elsewhere/*.tar}}"], prune=True, force_prune=True)
    assert failing.pruned == 0 and not failing.ok
    assert [path for path, _ in failing.failures] == [f"{other}/*.tar"]
    assert engine.catalog.count_items() == 8

    held = engine.index([glob_of(shards)], prune=True)  # 4 of 8 samples at once: past the share
    assert held.pruned == 0 and not held.ok
    [(root, reason)] = held.prunes_skipped
    assert root == glob_of(shards) and "2 of its shards are gone with 4 of its 8 samples" in reason
    assert "--force-prune" in reason

    forced = engine.index([glob_of(shards)], prune=True, force_prune=True)
    assert (forced.pruned, forced.unchanged, forced.ok) == (4, 4, True)
    paths = {result.path.rpartition("#")[0] for result in engine.search("dusk", k=10)}
    assert paths == {f"{shards}/part-000.tar", f"{shards}/part-001.tar"}  # the published space agrees
    assert engine.catalog.count_items() == 4


def test_a_shard_named_without_a_glob_that_is_gone_is_an_error_not_a_prune(engine: Engine, tmp_path: Path) -> None:
    for number in range(3):
        write_shard(tmp_path / f"{number:05d}.tar", number * 2, 2)
    pattern = f"{tmp_path}/{{00000..00002}}.tar"
    assert engine.index([pattern]).indexed == 6
    (tmp_path / "00002.tar").unlink()
    report = engine.index([pattern], prune=True, force_prune=True)
    assert report.pruned == 0 and not report.ok
    assert [path for path, _ in report.failures] == [f"{tmp_path}/00002.tar"]
    assert engine.catalog.count_items() == 6


def test_a_brace_pattern_of_absolute_alternatives_lists_each_of_them(tmp_path: Path) -> None:
    from xmodal.indexer.locations import parse_root
    from xmodal.indexer.webdataset import ShardSet, list_shards

    write_shard(tmp_path / "a.tar", 0, 1)
    (tmp_path / "more").mkdir()
    write_shard(tmp_path / "more" / "b.tar", 1, 1)
    root = parse_root(f"{{{tmp_path}/a.tar,{tmp_path}/more/*.tar}}")
    assert isinstance(root, ShardSet) and root.pattern.startswith("{/")
    errors: list[tuple[str, str]] = []
    shards = list_shards(root, lambda pattern, reason: errors.append((pattern, reason)))
    assert [shard.address for shard in shards] == [str(tmp_path / "a.tar"), str(tmp_path / "more" / "b.tar")]
    assert errors == []
