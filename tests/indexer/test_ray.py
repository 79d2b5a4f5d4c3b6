"""`xmodal index --ray`: decode and encode on a real local Ray cluster (2 CPUs), commit on the driver."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_settings, write_corpus
from xmodal.config import Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine

ray = pytest.importorskip("ray", reason="Ray is in the distributed extra: pip install -e '.[distributed]'")


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _vectors_by_path(engine: Engine, space: str) -> dict[tuple[str, int], np.ndarray]:
    index = engine.spaces[space].stored_index()
    assert index is not None
    ids = index.ids()
    owners = engine.catalog.resolve_vectors(ids.tolist())
    items = engine.catalog.get_items([owner.item_id for owner in owners.values()])
    return {
        (items[owners[i].item_id].path, owners[i].start or 0): v
        for i, v in zip(ids.tolist(), index.reconstruct(ids), strict=True)
    }


def test_ray_run_equals_a_local_run_and_keeps_the_guarantees(
    local_cluster: None,
    tmp_path: Path,
    tiny_clip_dir: Path,
    tiny_clap_dir: Path,
    encoder_pool: Callable[[str, Settings], Encoder],
) -> None:
    root = write_corpus(tmp_path / "corpus", images=24, texts=24)
    local = make_settings(tmp_path / "local", tiny_clip_dir, tiny_clap_dir, speech_model="")
    with Engine.open(settings=local, build_encoder=encoder_pool) as engine:
        assert engine.index([root]).indexed == 48
        expected = {space: _vectors_by_path(engine, space) for space in ("clip", "text")}

    settings = make_settings(
        tmp_path / "ray", tiny_clip_dir, tiny_clap_dir, speech_model="", ray_workers=2, checkpoint_every=16
    )
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        report = engine.index([root], ray_address="local")
        assert (report.indexed, report.failed) == (48, 0)
        for space, vectors in expected.items():
            got = _vectors_by_path(engine, space)
            assert got.keys() == vectors.keys()  # every file once, in every space
            assert min(float(got[key] @ vectors[key]) for key in got) > 0.9999  # the same model, the same vectors
            assert sorted(engine.spaces[space].stored_index().ids().tolist()) == sorted(
                engine.catalog.vector_ids(space)
            )  # catalog and index agree id for id

        shutil.copy(root / "image_001.png", root / "copy_of_image_001.png")
        shutil.copy(root / "image_001.png", root / "recaptioned.png")
        (root / "recaptioned.txt").write_text("a different caption, so a different text vector")
        again = engine.index([root], ray_address="local")
        assert (again.indexed, again.unchanged, again.reused) == (2, 48, 1)  # only the same-caption copy reuses
        copied = _vectors_by_path(engine, "clip")
        np.testing.assert_allclose(
            copied[(str(root / "copy_of_image_001.png"), 0)], copied[(str(root / "image_001.png"), 0)], atol=1e-6
        )


def test_ray_reads_shards_in_its_workers_one_task_per_shard(
    local_cluster: None,
    tmp_path: Path,
    tiny_clip_dir: Path,
    encoder_pool: Callable[[str, Settings], Encoder],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("webdataset", reason="the cloud extra is not installed: pip install 'xmodal[cloud]'")
    import os

    from tests.indexer.test_webdataset import write_shard
    from xmodal.indexer import webdataset

    shards = tmp_path / "shards"
    shards.mkdir()
    write_shard(shards / "part-000.tar", 0, 3, corrupt=1)
    write_shard(shards / "part-001.tar", 3, 3)
    write_shard(shards / "part-002.tar", 6, 3)
    (shards / "part-003.tar").write_bytes(b"not a tar archive " * 64)
    pattern = str(shards / "part-*.tar")
    local = make_settings(tmp_path / "local", tiny_clip_dir, speech_model="")
    with Engine.open(settings=local, build_encoder=encoder_pool) as engine:
        first = engine.index([pattern])
        assert (first.indexed, first.failed) == (8, 2)  # a corrupt sample, a shard that is no tar
        expected = {space: _vectors_by_path(engine, space) for space in ("clip", "text")}

    settings = make_settings(tmp_path / "ray", tiny_clip_dir, speech_model="", ray_workers=2)
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        engine.index([pattern], max_items=2)  # a run cut short inside part-000: sample-0000 (and the bad -0001)

        def read_on_the_driver(address: str) -> None:
            raise AssertionError(f"the driver read {address}: a Ray run leaves shards to its workers")

        monkeypatch.setattr(webdataset, "iter_samples", read_on_the_driver)
        with caplog.at_level("INFO", logger="xmodal.indexer.runner"):
            report = engine.index([pattern], ray_address="local")
        assert (report.scanned, report.unchanged, report.indexed, report.failed) == (9, 1, 7, 2)
        assert sorted(path for path, _ in report.failures) == [
            f"{shards}/part-000.tar#sample-0001",
            str(shards / "part-003.tar"),
        ]
        readers = {
            record.args[0]: record.args[2] for record in caplog.records if record.msg.startswith("shard %s: %d samples")
        }
        assert sorted(readers) == [str(shards / f"part-{n:03d}.tar") for n in range(3)]  # each shard read once
        assert os.getpid() not in readers.values()  # ... by a worker
        for space, vectors in expected.items():
            got = _vectors_by_path(engine, space)
            assert got.keys() == vectors.keys()  # every good sample once, in every space
            assert min(float(got[key] @ vectors[key]) for key in got) > 0.9999
            assert sorted(engine.spaces[space].stored_index().ids().tolist()) == sorted(
                engine.catalog.vector_ids(space)
            )

        (shards / "part-003.tar").unlink()
        again = engine.index([pattern], ray_address="local", prune=True)  # every shard complete: only listed
        assert (again.indexed, again.unchanged, again.pruned, again.still_failing) == (0, 9, 0, 1)
