"""kill -9 in the middle of a WebDataset shard, then a re-run: it resumes, nothing is lost, nothing duplicated.

A real ``xmodal index`` subprocess over two shards is stopped with SIGKILL at a known moment inside the second
shard: right after a catalog commit whose vectors are not published yet, or right after a checkpoint
publication. The moment is not guessed with sleeps: a small bootstrap wraps the catalog's commit (or the spaces'
checkpoint) in the subprocess; at the chosen call it says so on stdout and blocks reading stdin, and the test kills
it as soon as it has read that line. The re-run must then index each sample exactly once, with the catalog and the
published spaces agreeing id for id.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import make_settings
from tests.indexer.test_webdataset import write_shard
from xmodal.config import Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine
from xmodal.store.manifest import read_manifest
from xmodal.store.snapshot import SpaceSnapshot

pytest.importorskip("webdataset", reason="the cloud extra is not installed: pip install 'xmodal[cloud]'")

SAMPLES = (4, 8)  # samples of part-000 and part-001; batches of 2, a checkpoint every 4

BOOTSTRAP = """
import os, runpy, sys
from xmodal.spaces import SpaceSet
from xmodal.store.catalog import Catalog

point, at = os.environ["KILL_POINT"], int(os.environ["KILL_AT"])
calls = 0

def pause_after(original, counted):
    def wrapper(self, *args, **kwargs):
        global calls
        result = original(self, *args, **kwargs)
        if counted(kwargs):
            calls += 1
            if calls == at:
                print(f"paused after {point} {calls}", flush=True)
                sys.stdin.read()  # the test kills this process here
        return result
    return wrapper

if point == "commit":
    Catalog.write_items = pause_after(Catalog.write_items, lambda kwargs: True)
else:
    SpaceSet.save = pause_after(SpaceSet.save, lambda kwargs: not kwargs.get("final"))
sys.argv = ["xmodal", *sys.argv[1:]]
runpy.run_module("xmodal", run_name="__main__")
"""


def _run_until_paused(pattern: str, settings: Settings, point: str, at: int) -> str:
    env = {
        **os.environ,
        "XMODAL_HOME": str(settings.home),
        "XMODAL_CLIP_ENCODER": settings.clip_encoder,
        "XMODAL_SPEECH_MODEL": "",
        "XMODAL_DEVICE": "cpu",
        "XMODAL_OCR": "false",
        "XMODAL_VECTOR_DTYPE": "float32",
        "XMODAL_BATCH_SIZE": str(settings.batch_size),
        "XMODAL_AUTO_BATCH_SIZE": "false",
        "XMODAL_DECODE_WORKERS": "1",
        "XMODAL_CHECKPOINT_EVERY": str(settings.checkpoint_every),
        "HF_HUB_OFFLINE": "1",
        "KILL_POINT": point,
        "KILL_AT": str(at),
    }
    command = [sys.executable, "-c", BOOTSTRAP, "index", pattern, "--quiet"]
    process = subprocess.Popen(
        command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stderr is not None
    line = process.stdout.readline()  # blocks until the subprocess pauses (or ends without pausing)
    if not line.startswith("paused"):
        process.kill()
        pytest.fail(f"the indexer ended before the kill point ({process.wait()}): {process.stderr.read()[-2000:]}")
    process.kill()  # SIGKILL, while it waits inside the shard
    process.wait()
    return line.strip()


def _shard_samples(shards: Path) -> set[str]:
    return {
        f"{shards}/part-{number:03d}.tar#sample-{key:04d}"
        for number, (first, count) in enumerate([(0, SAMPLES[0]), (SAMPLES[0], SAMPLES[1])])
        for key in range(first, first + count)
    }


def _assert_consistent(engine: Engine, settings: Settings, expected: set[str]) -> None:
    states = engine.catalog.file_states()
    assert set(states) == expected  # every sample once: paths are unique in the catalog
    assert {state.status for state in states.values()} == {"ok"}
    coverage = engine.catalog.spaces_by_item()
    for path, state in states.items():
        assert {"clip", "text"} <= coverage.get(state.item_id, set()), path
    for name in engine.spaces.names():
        manifest = read_manifest(settings.spaces_dir / name)
        on_disk = SpaceSnapshot.open(settings.spaces_dir / name, manifest) if manifest else None
        ids = on_disk.ids().tolist() if on_disk else []
        assert len(ids) == len(set(ids)), name  # nothing duplicated in the published space
        assert sorted(ids) == sorted(engine.catalog.vector_ids(name)), name  # the catalog and the space agree


@pytest.mark.parametrize(
    ("point", "at"),
    [
        ("commit", 5),  # the 5th commit: the 3rd batch of part-001, 2 batches not yet published
        ("checkpoint", 2),  # the 2nd checkpoint: 8 samples published, 4 of part-001 still to go
    ],
)
def test_kill_9_mid_shard_then_rerun_resumes(
    point: str, at: int, tmp_path: Path, tiny_clip_dir: Path, encoder_pool: Callable[[str, Settings], Encoder]
) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    write_shard(shards / "part-000.tar", 0, SAMPLES[0])
    write_shard(shards / "part-001.tar", SAMPLES[0], SAMPLES[1])
    pattern = str(shards / "part-*.tar")
    settings = make_settings(tmp_path / "home", tiny_clip_dir, speech_model="", batch_size=2, checkpoint_every=4)

    assert _run_until_paused(pattern, settings, point, at) == f"paused after {point} {at}"

    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        last = engine.catalog.last_run()
        assert last is not None and last[1] == "running"  # the run was killed, not finished
        committed = engine.catalog.count_items()
        assert SAMPLES[0] < committed < sum(SAMPLES)  # the kill landed inside part-001
        report = engine.index([pattern], prune=True)
        assert (report.failed, report.pruned, report.scanned) == (0, 0, sum(SAMPLES))
        assert report.indexed + report.updated + report.unchanged == sum(SAMPLES)
        if point == "commit":  # the commits since the last checkpoint were never published: embedded again
            assert (committed, report.repaired, report.unchanged, report.updated, report.indexed) == (10, 4, 8, 2, 2)
        else:  # everything committed was published: kept, only the rest is embedded
            assert (committed, report.repaired, report.unchanged, report.updated, report.indexed) == (8, 0, 8, 0, 4)
        _assert_consistent(engine, settings, _shard_samples(shards))
        hits = engine.search("a lantern at dusk", k=sum(SAMPLES))
        assert len({hit.path for hit in hits}) == len(hits) == sum(SAMPLES)  # one hit per sample, none twice

        again = engine.index([pattern], prune=True)
        assert (again.indexed, again.updated, again.unchanged, again.vectors_added) == (0, 0, sum(SAMPLES), 0)
