"""A space changes model while a live server answers: `spaces switch`, three partial index runs, rollback.

What a user is promised, tested as they meet it: no query fails while the new version is built over three runs
of ``--max-items``; every answer before the switch is exactly the old model's, and once the new version is
current every answer is the new model's (never a mix, never back); ``/readyz`` and ``stats`` show both versions
and the progress; the admin call rolls back and the old results come back exactly. Runs on SQLite and
PostgreSQL (this package's ``settings`` fixture).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from pydantic import SecretStr

from tests.conftest import brute_force_top_k, live_server, write_corpus
from xmodal.api.app import create_app
from xmodal.config import Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine
from xmodal.modality import Modality
from xmodal.search.query import QueryPart
from xmodal.search.searcher import encode_part

MAX_ROUNDS = 300  # the client loop is bounded whatever happens to the indexer
QUERY = "river forest mountain"
KEY = "admin-key"


def _knn(http: httpx.Client) -> httpx.Response:
    return http.post("/knn-service", content=json.dumps({"text": QUERY, "num_images": 5, "indice_name": "clip"}))


def _answer(response: httpx.Response) -> list[tuple[int, float]]:
    return [(hit["id"], hit["similarity"]) for hit in response.json()]


def _brute_force(engine: Engine) -> list[int]:
    """The 5 best images for QUERY in the clip space's current version, by exact inner product."""
    space = engine.spaces["clip"]
    ids, vectors = space.stored_index().vectors()
    hits = engine.catalog.resolve_vectors(ids.tolist())
    keep = [i for i, vector_id in enumerate(ids.tolist()) if hits[vector_id].modality == Modality.IMAGE]
    owners = [hits[int(ids[i])].item_id for i in keep]
    query = encode_part(space, QueryPart.text(QUERY))
    return brute_force_top_k(owners, vectors[keep], query, 5)


def test_a_space_switches_model_while_the_server_answers(
    settings: Settings,
    tmp_path: Path,
    encoder_pool: Callable[[str, Settings], Encoder],
    other_tiny_clip_dir: Path,
) -> None:
    settings = settings.model_copy(update={"checkpoint_every": 2, "api_key": SecretStr(KEY)})
    library = write_corpus(tmp_path / "library", images=12, texts=6, seed=3)  # 18 items in the clip space
    new_model = f"open_clip:local-dir:{other_tiny_clip_dir}"
    server_engine = Engine.open(settings=settings, build_encoder=encoder_pool)
    indexer_engine = Engine.open(settings=settings, build_encoder=encoder_pool)  # the nightly job's own process
    with server_engine:
        server_engine.index([library])
        old_model = server_engine.spaces["clip"].encoder.spec
        phase = [0]  # 0: before the switch, 1-3: during index run n, 4: after the third run
        problems: list[str] = []
        during: dict[str, object] = {}
        done = threading.Event()

        with live_server(create_app(engine=server_engine)) as base, httpx.Client(base_url=base, timeout=60) as http:
            old_answer = _answer(_knn(http))
            assert [item for item, _ in old_answer] == _brute_force(server_engine)

            def nightly() -> None:
                try:
                    state = indexer_engine.switch_space("clip", new_model)
                    assert (state.covered, state.total) == (0, 18)
                    for run in (1, 2, 3):
                        phase[0] = run
                        report = indexer_engine.index([library], max_items=6)
                        assert report.shadows["clip"].embedded == 6, report.shadows
                        assert report.shadows["clip"].promoted == (run == 3)
                        if run == 1:
                            with httpx.Client(base_url=base, timeout=60) as own:
                                during["readyz"] = own.get("/readyz").json()
                                during["overview"] = own.get("/overview").json()
                            during["stats"] = indexer_engine.stats()
                    phase[0] = 4
                except BaseException as exc:  # reported by the main thread
                    problems.append(f"indexer: {exc!r}")
                finally:
                    done.set()

            writer = threading.Thread(target=nightly)
            writer.start()
            answers: list[tuple[int, list[tuple[int, float]]]] = []
            rounds = 0
            while rounds < MAX_ROUNDS and (not done.is_set() or rounds < 6):
                sent_in = phase[0]
                rounds += 1
                fused = rounds % 3 == 0  # a fused search over every space, now and then
                response = http.post("/search", json={"text": QUERY, "k": 5}) if fused else _knn(http)
                if response.status_code != 200:
                    problems.append(f"{response.request.url}: {response.status_code} {response.text[:300]}")
                    continue
                if not fused:
                    answers.append((sent_in, _answer(response)))
            writer.join(timeout=300)
            assert not writer.is_alive()
            assert not problems, problems[:5]

            server_engine.reload()  # the new version, if the background load has not swapped it in yet
            assert server_engine.spaces["clip"].encoder.spec == new_model
            new_answer = _answer(_knn(http))
            assert [item for item, _ in new_answer] == _brute_force(server_engine)  # the new model's ranking
            assert new_answer != old_answer

            # every answer is exactly one model's; the old one's until the third run, never back after the new one
            kinds = ["old" if answer == old_answer else "new" if answer == new_answer else "?" for _, answer in answers]
            assert "?" not in kinds, [a for k, a in zip(kinds, answers, strict=True) if k == "?"][:2]
            assert all(kind == "old" for (sent_in, _), kind in zip(answers, kinds, strict=True) if sent_in < 3)
            assert kinds == sorted(kinds, key=lambda kind: kind == "new")  # old ... old new ... new
            assert sum(sent_in in (1, 2) for sent_in, _ in answers) >= 2  # asked while the new version was built

            # both versions and the progress, while it was built
            readyz = during["readyz"]
            assert readyz["status"] == "ready" and readyz["spaces"]["clip"] == "ready"
            switch = readyz["versions"]["clip"]
            assert (switch["covered"], switch["total"]) == (6, 18)
            roles = {v["role"]: v for v in switch["versions"]}
            assert roles["current"]["encoder_spec"] == old_model and roles["current"]["vectors"] >= 18
            assert roles["shadow"]["encoder_spec"] == new_model and roles["shadow"]["items"] == 6
            clip_row = next(s for s in during["overview"]["spaces"] if s["name"] == "clip")
            assert clip_row["switch"] == {"encoder": new_model, "version": 2, "progress": 6 / 18}
            clip_stats = next(s for s in during["stats"].spaces if s.name == "clip")
            assert clip_stats.version == 1 and clip_stats.switch_progress == 6 / 18

            # after the switch: the old version stays for rollback, shown as previous
            after = http.get("/readyz").json()["versions"]["clip"]
            assert [(v["number"], v["role"]) for v in after["versions"]] == [(2, "current"), (1, "previous")]

            # rollback over HTTP (an admin call): the old results, exactly
            assert http.post("/admin/spaces/clip/rollback").status_code == 401
            rolled = http.post("/admin/spaces/clip/rollback", headers={"X-API-Key": KEY})
            assert rolled.status_code == 200, rolled.text
            assert [(v["number"], v["role"]) for v in rolled.json()["versions"]] == [(1, "current"), (2, "previous")]
            assert _answer(_knn(http)) == old_answer

            # roll forward again, then forget the old model: one version is left
            indexer_engine.rollback_space("clip")
            server_engine.reload()
            assert _answer(_knn(http)) == new_answer
            forgot = http.post("/admin/spaces/clip/switch", json={"forget_old": True}, headers={"X-API-Key": KEY})
            assert forgot.status_code == 200, forgot.text
            assert [v["role"] for v in forgot.json()["versions"]] == ["current"]
            assert "versions" not in http.get("/readyz").json()  # one version of every space again
            assert _answer(_knn(http)) == new_answer
    indexer_engine.close()
    # the forgotten version's rows and files are gone; the current one's vectors are all published, once
    space_dir = settings.spaces_dir / "clip"
    assert not (space_dir / "manifest.json").exists() and (space_dir / "v2" / "manifest.json").exists()
    assert server_engine.catalog.stats().embeddings_by_space.get("clip", 0) == 0
    ids = server_engine.spaces["clip"].stored_index().ids()
    assert len(ids) == len(np.unique(ids)) == server_engine.catalog.stats().embeddings_by_space["clip@v2"]


def test_a_query_encoded_before_a_switch_is_searched_on_the_version_it_was_encoded_for(
    settings: Settings,
    tmp_path: Path,
    encoder_pool: Callable[[str, Settings], Encoder],
    other_tiny_clip_dir: Path,
) -> None:
    """A server encodes a query (``prepare``) and searches it later in a search slot (``finish``): a switch made
    current in between must not search the old model's query vector in the new model's index (CI once saw such a
    mixed answer in the live test above)."""
    library = write_corpus(tmp_path / "library", images=8, texts=4, seed=5)
    server_engine = Engine.open(settings=settings, build_encoder=encoder_pool)
    indexer_engine = Engine.open(settings=settings, build_encoder=encoder_pool)
    with server_engine, indexer_engine:
        server_engine.index([library])
        query = server_engine.build_query(text=QUERY, k=5, space="clip")
        old = [(r.item_id, r.score) for r in server_engine.query(query).results]

        prepared = server_engine.prepare(query)  # encoded by the old model
        indexer_engine.switch_space("clip", f"open_clip:local-dir:{other_tiny_clip_dir}")
        assert indexer_engine.index([library]).shadows["clip"].promoted
        server_engine.spaces.refresh(wait=True)  # the new version is current before the prepared query is searched
        assert server_engine.spaces["clip"].version == 2

        assert [(r.item_id, r.score) for r in server_engine.finish(prepared).results] == old
        new = [(r.item_id, r.score) for r in server_engine.query(query).results]
        assert new != old  # a query made now is the new model's


def test_the_admin_call_starts_promotes_and_cancels_a_switch(
    settings: Settings,
    tmp_path: Path,
    encoder_pool: Callable[[str, Settings], Encoder],
    other_tiny_clip_dir: Path,
) -> None:
    """`POST /admin/spaces/{space}/switch` as an operator uses it: `to` starts the new version (the next index run
    builds it while searches keep the old model), `promote` makes it current before it covers everything, the
    same `to` again changes nothing and another one conflicts, and `cancel` abandons one."""
    settings = settings.model_copy(update={"api_key": SecretStr(KEY)})
    library = write_corpus(tmp_path / "library", images=6, texts=2, seed=7)
    new_model = f"open_clip:local-dir:{other_tiny_clip_dir}"
    server_engine = Engine.open(settings=settings, build_encoder=encoder_pool)
    indexer_engine = Engine.open(settings=settings, build_encoder=encoder_pool)
    with server_engine, indexer_engine, live_server(create_app(engine=server_engine)) as base:
        server_engine.index([library])
        with httpx.Client(base_url=base, timeout=60, headers={"X-API-Key": KEY}) as http:
            old_answer = _answer(_knn(http))
            assert http.post("/admin/spaces/clip/switch", json={}).status_code == 422  # nothing asked
            assert http.post("/admin/spaces/nope/switch", json={"to": new_model}).status_code == 404

            started = http.post("/admin/spaces/clip/switch", json={"to": new_model})
            assert started.status_code == 200, started.text
            body = started.json()
            assert [v["role"] for v in body["versions"]] == ["current", "shadow"]
            assert (body["covered"], body["total"]) == (0, 8)
            again = http.post("/admin/spaces/clip/switch", json={"to": new_model})
            assert again.status_code == 200 and again.json()["versions"] == body["versions"]  # the same: no change
            other = http.post("/admin/spaces/clip/switch", json={"to": server_engine.spaces["clip"].encoder.spec})
            assert other.status_code == 409 and "--cancel" in other.json()["detail"]  # one switch at a time

            assert indexer_engine.index([library], max_items=3).shadows["clip"].embedded == 3  # the nightly run
            assert _answer(_knn(http)) == old_answer  # searches keep the current model meanwhile
            promoted = http.post("/admin/spaces/clip/switch", json={"promote": True})
            assert promoted.status_code == 200, promoted.text
            assert [(v["number"], v["role"]) for v in promoted.json()["versions"]] == [(2, "current"), (1, "previous")]
            server_engine.reload()
            assert _answer(_knn(http)) != old_answer  # the new model answers, over what it covers

            back = http.post("/admin/spaces/clip/rollback")
            assert back.status_code == 200, back.text
            assert _answer(_knn(http)) == old_answer
            restarted = http.post("/admin/spaces/clip/switch", json={"forget_old": True})
            assert restarted.status_code == 200, restarted.text
            assert http.post("/admin/spaces/clip/switch", json={"to": new_model}).status_code == 200
            cancelled = http.post("/admin/spaces/clip/switch", json={"cancel": True})
            assert cancelled.status_code == 200, cancelled.text
            assert [v["role"] for v in cancelled.json()["versions"]] == ["current"]
            assert _answer(_knn(http)) == old_answer
