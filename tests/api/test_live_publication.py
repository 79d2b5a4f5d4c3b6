"""A live server answers while the nightly indexer publishes checkpoints, merges segments and prunes a folder.

What a reader is guaranteed, tested as a user meets it: no request fails (no 5xx), every id a search returns
resolves to an item (unless a prune removed it after the search), and once the runs are over the newest items are
found and the pruned ones never are. Runs on SQLite and on PostgreSQL (this package's ``settings`` fixture).
"""

from __future__ import annotations

import io
import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
from PIL import Image

from tests.conftest import live_server, write_corpus
from xmodal.api.app import create_app
from xmodal.config import Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine

MAX_ROUNDS = 400  # the client loop is bounded whatever happens to the indexer


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), "teal").save(buffer, format="PNG")
    return buffer.getvalue()


class _TakeTurns:
    """The indexer's progress: before each step it lets the server answer one request, so the requests really
    interleave with checkpoints, merges and the prune on any machine (CI's once finished both runs while the
    server had answered three). The client loop says when a request was answered, and when it has stopped."""

    def __init__(self) -> None:
        self.answered = threading.Event()
        self.client_stopped = threading.Event()

    def scanning(self, files_seen: int) -> None: ...
    def start(self, total: int) -> None: ...
    def finish(self) -> None: ...

    def advance(self, count: int) -> None:
        if not self.client_stopped.is_set():
            self.answered.wait(timeout=60)  # bounded: a stuck client fails the test, it does not hang it
            self.answered.clear()


def test_server_answers_while_an_indexer_publishes_and_prunes(
    settings: Settings, tmp_path: Path, encoder_pool: Callable[[str, Settings], Encoder]
) -> None:
    settings = settings.model_copy(update={"checkpoint_every": 8, "batch_size": 8, "merge_factor": 3, "merge_floor": 8})
    library = tmp_path / "library"
    write_corpus(library / "old", images=16, texts=8, seed=1)  # 24 of 136 items: a prune under 25%
    server_engine = Engine.open(settings=settings, build_encoder=encoder_pool)
    indexer_engine = Engine.open(settings=settings, build_encoder=encoder_pool)  # another reader/writer, as cron's
    with server_engine:
        server_engine.index([library / "old"])  # something to find before the nightly run starts
        problems: list[str] = []
        done = threading.Event()
        turns = _TakeTurns()

        def nightly() -> None:
            try:
                write_corpus(library / "new", images=96, texts=16, seed=2)
                indexer_engine.index([library], progress=turns)  # many checkpoints (every 8 items) and merges
                shutil.rmtree(library / "old")
                report = indexer_engine.index([library], prune=True, progress=turns)
                assert report.pruned == 16 + 8, report
            except BaseException as exc:  # reported by the main thread
                problems.append(f"indexer: {exc!r}")
            finally:
                done.set()

        pruned_prefix = str((library / "old").absolute()) + "/"
        with live_server(create_app(engine=server_engine)) as base, httpx.Client(base_url=base, timeout=60) as http:
            writer = threading.Thread(target=nightly)
            writer.start()
            requests = [
                lambda: http.post("/search", json={"text": "river forest mountain", "k": 10}),
                lambda: http.post("/search", files={"image": ("q.png", _png(), "image/png")}, data={"k": "5"}),
                lambda: http.post("/knn-service", content=json.dumps({"text": "river", "num_images": 6})),
                lambda: http.post("/search", json={"text": "lake", "k": 5, "space": "text"}),
            ]
            rounds = during = 0
            while rounds < MAX_ROUNDS and (not done.is_set() or rounds < 8):
                during += not done.is_set()
                response = requests[rounds % len(requests)]()
                rounds += 1
                turns.answered.set()  # the indexer takes its next step
                if response.status_code >= 500:
                    problems.append(f"{response.request.url}: {response.status_code} {response.text[:300]}")
                    continue
                assert response.status_code == 200, response.text
                body = response.json()
                hits = body["results"] if isinstance(body, dict) else body
                for hit in hits:
                    item = http.get(f"/items/{hit['id']}")
                    if item.status_code == 404 and done.is_set() is False:
                        # only a prune may take an item away between the search and the look-up
                        assert str(hit.get("path", pruned_prefix)).startswith(pruned_prefix) or "path" not in hit
                        continue
                    if item.status_code >= 500:
                        problems.append(f"/items/{hit['id']}: {item.status_code}")
            turns.client_stopped.set()
            writer.join(timeout=600)
            assert not writer.is_alive()
            assert not problems, problems[:5]
            assert during >= 12  # the server was really asked while the indexer ran (once per batch of 8: a checkpoint)

            server_engine.reload()  # load the last publication now (it is otherwise picked up in the background)
            everything = http.post("/search", json={"text": "river forest", "k": 200, "space": "clip"}).json()
            paths = {hit["path"] for hit in everything["results"]}
            assert not {p for p in paths if p.startswith(pruned_prefix)}  # pruned items are never found
            newest = {str(p.absolute()) for p in (library / "new").glob("image_*.png")}
            assert newest <= paths  # every new image is in the published clip space
    indexer_engine.close()
    # every vector the catalog knows is published, once, and nothing else is
    for space in server_engine.spaces:
        snapshot = space.stored_index()
        ids = snapshot.ids().tolist() if snapshot else []
        assert len(ids) == len(set(ids))
