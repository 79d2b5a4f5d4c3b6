"""kill -9 at random moments, then a re-run: the catalog and every vector index converge, id for id.

A real indexer subprocess is killed at a random time after it took the home's lock (while models load, while it
embeds and commits, or while it saves an index); the random delay is the fault being injected, not a way to wait
for anything. After each kill the tree is indexed again to completion and the invariants are checked on disk.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import make_settings, write_corpus
from xmodal.config import Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine
from xmodal.store.manifest import read_manifest
from xmodal.store.snapshot import SpaceSnapshot

ROUNDS = 10


def _start_indexer(root: Path, settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "XMODAL_HOME": str(settings.home),
        "XMODAL_CLIP_ENCODER": settings.clip_encoder,
        "XMODAL_CLAP_ENCODER": settings.clap_encoder,
        "XMODAL_SPEECH_MODEL": "",
        "XMODAL_DEVICE": "cpu",
        "XMODAL_BATCH_SIZE": str(settings.batch_size),
        "XMODAL_CHECKPOINT_EVERY": str(settings.checkpoint_every),
        "HF_HUB_OFFLINE": "1",
    }
    command = [sys.executable, "-m", "xmodal", "index", str(root), "--quiet"]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_at_random(process: subprocess.Popen[bytes], lock_info: Path, rng: random.Random) -> None:
    deadline = time.monotonic() + 60
    while not lock_info.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # waiting for the run to begin; the kill moment below is the injected fault
    time.sleep(rng.uniform(0.0, 3.5))
    process.kill()
    process.wait()


def _check_invariants(settings: Settings, root: Path) -> None:
    with Engine.open(settings=settings) as engine:
        files = {
            str(p) for p in root.iterdir() if p.suffix == ".png" or (p.suffix == ".txt" and p.stem.startswith("doc"))
        }
        items = engine.catalog.file_states()
        assert set(items) == files  # every file exactly once (paths are unique in the catalog)
        assert {state.status for state in items.values()} == {"ok"}
        coverage = engine.catalog.spaces_by_item()
        for path, state in items.items():
            wanted = {"clip"} | ({"text"} if state.has_text else set())
            if path.endswith(".txt"):
                wanted |= {"clap"}
            assert wanted <= coverage.get(state.item_id, set()), path
        for name in engine.spaces.names():
            manifest = read_manifest(settings.spaces_dir / name)
            on_disk = SpaceSnapshot.open(settings.spaces_dir / name, manifest) if manifest else None
            ids = on_disk.ids().tolist() if on_disk else []
            assert len(ids) == len(set(ids)), name  # nothing duplicated
            assert sorted(ids) == sorted(engine.catalog.vector_ids(name)), name  # catalog and index agree


def test_kill_9_then_rerun_converges(
    tmp_path: Path, tiny_clip_dir: Path, tiny_clap_dir: Path, encoder_pool: Callable[[str, Settings], Encoder]
) -> None:
    root = write_corpus(tmp_path / "corpus", images=120, texts=120)
    settings = make_settings(tmp_path / "home", tiny_clip_dir, tiny_clap_dir, checkpoint_every=48, speech_model="")
    rng = random.Random(7)
    files = sorted(root.iterdir())
    interrupted = repaired = 0
    for _ in range(ROUNDS):
        _kill_at_random(_start_indexer(root, settings), settings.home / "index.lock.json", rng)
        with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
            last = engine.catalog.last_run()
            interrupted += last is not None and last[1] == "running"  # killed before it could finish
            report = engine.index([root])
            assert report.failed == 0
            repaired += report.repaired
        _check_invariants(settings, root)
        for path in rng.sample(files, 120):  # give the next killed run work to be interrupted in
            stat = path.stat()
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    print(f"{interrupted} of {ROUNDS} runs killed mid-run; {repaired} catalog/index mismatches repaired")
    assert interrupted >= ROUNDS // 2  # the kills did land inside runs
