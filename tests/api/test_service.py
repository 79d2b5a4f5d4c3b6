"""Operating the service: readiness, Prometheus metrics, API key for writes, CORS, path tricks, the web page."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from tests.conftest import make_settings, write_corpus
from xmodal.api.app import create_app
from xmodal.config import Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine

KEY = "s3cret-key"


@pytest.fixture
def indexed(engine: Engine, tmp_path: Path) -> Engine:
    engine.index([write_corpus(tmp_path / "corpus", images=6, texts=6)])
    return engine


@pytest.fixture
def client(indexed: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine=indexed)) as test_client:
        yield test_client


@pytest.fixture
def admin(indexed: Engine) -> Iterator[TestClient]:
    indexed.settings.api_key = SecretStr(KEY)
    with TestClient(create_app(engine=indexed)) as test_client:
        yield test_client


def test_the_search_page_is_served_without_a_build_step(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="search-form"' in page.text and "static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")


def test_readiness_reports_each_space(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "spaces": {"clip": "ready", "text": "ready", "clap": "ready"}}
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readiness_is_503_with_the_reason_when_a_model_is_missing(
    indexed: Engine, tmp_path: Path, tiny_clap_dir: Path, encoder_pool: Callable[[str, Settings], Encoder]
) -> None:
    moved = make_settings(
        indexed.settings.home, tmp_path / "no-such-model", tiny_clap_dir, database_url=indexed.settings.database_url
    )
    indexed.close()
    with (
        Engine.open(settings=moved, build_encoder=encoder_pool) as engine,
        TestClient(create_app(engine=engine)) as client,
    ):
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready" and body["spaces"]["text"] == "ready"
    assert "no-such-model" in body["spaces"]["clip"]


def test_prometheus_metrics_cover_requests_stages_indexes_and_the_indexer(client: TestClient, indexed: Engine) -> None:
    assert client.post("/search", json={"text": "river", "k": 3}).status_code == 200
    client.get("/items/999999")
    text = client.get("/metrics").text
    assert 'xmodal_http_request_seconds_count{method="POST",route="/search",status="200"} 1.0' in text
    assert 'route="/items/{item_id}",status="404"' in text  # the route's template, not the id
    for stage in ("encode", "ann", "fusion", "rerank"):
        assert f'xmodal_search_stage_seconds_count{{stage="{stage}"}} 1.0' in text
    assert f'xmodal_index_vectors{{space="clip"}} {float(indexed.spaces["clip"].size)}' in text
    assert indexed.spaces["clip"].size >= 12  # six images, six texts (long ones in several chunks)
    assert 'xmodal_indexer_files_total{outcome="indexed"} 12.0' in text


def test_writes_are_off_without_a_configured_key(client: TestClient) -> None:
    response = client.delete("/items/1")
    assert response.status_code == 403 and "XMODAL_API_KEY" in response.json()["detail"]
    assert client.post("/admin/reload").status_code == 403


def test_writes_need_the_right_key(admin: TestClient, indexed: Engine) -> None:
    item = admin.post("/search", json={"text": "river", "k": 1, "space": "text"}).json()["results"][0]["id"]
    assert admin.delete(f"/items/{item}").status_code == 401
    assert admin.delete(f"/items/{item}", headers={"X-API-Key": "wrong"}).status_code == 401
    response = admin.delete(f"/items/{item}", headers={"X-API-Key": KEY})
    assert response.status_code == 200, response.text
    assert admin.get(f"/items/{item}").status_code == 404
    found = admin.post("/search", json={"text": "river", "k": 50}).json()["results"]
    assert item not in {hit["id"] for hit in found}  # gone from every space
    assert admin.delete(f"/items/{item}", headers={"X-API-Key": KEY}).status_code == 404
    assert admin.post("/admin/reload", headers={"X-API-Key": KEY}).json()["status"] == "reloaded"


def test_an_index_run_can_be_started_over_http(admin: TestClient, tmp_path: Path) -> None:
    more = write_corpus(tmp_path / "more", images=0, texts=3, seed=5)
    admin.app.state.engine.settings.sources = [tmp_path.resolve()]  # type: ignore[attr-defined]
    assert admin.post("/admin/index", json={"paths": [str(more)]}).status_code == 401
    missing = str(tmp_path / "no-such-folder")
    refused = admin.post("/admin/index", json={"paths": [missing]}, headers={"X-API-Key": KEY})
    assert refused.status_code == 422 and missing in refused.text
    started = admin.post("/admin/index", json={"paths": [str(more)]}, headers={"X-API-Key": KEY})
    assert started.status_code == 202
    # TestClient runs background tasks before it returns; a real server answers first and indexes after.
    text = admin.get("/metrics").text
    assert 'xmodal_indexer_files_total{outcome="indexed"} 15.0' in text


def test_cors_is_a_setting(indexed: Engine) -> None:
    preflight = {"Origin": "https://front.example", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app(engine=indexed)) as closed:
        assert "access-control-allow-origin" not in closed.options("/knn-service", headers=preflight).headers
    indexed.settings.cors_origins = ["https://front.example"]
    with TestClient(create_app(engine=indexed)) as opened:
        response = opened.options("/knn-service", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://front.example"


def test_path_tricks_fail(client: TestClient, indexed: Engine, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the password is swordfish")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "notes.txt").write_text("meeting notes about the harbour")
    os.symlink(secret, linked / "escape.txt")  # a link inside the source that leads out of it
    indexed.index([linked])
    escape = next(hit for hit in indexed.search("password swordfish", k=20, space="text") if "escape" in hit.path)
    response = client.get(f"/items/{escape.item_id}/content")
    assert response.status_code == 403 and "outside its source folder" in response.json()["detail"]
    for path in (
        "/items/..%2F..%2Fetc%2Fpasswd/content",
        "/items/%2e%2e/content",
        "/static/..%2F..%2Fconfig.py",
        "/static/../api/app.py",
        "/items/1/content/..%2F..%2Fetc%2Fpasswd",
    ):
        response = client.get(path)
        assert response.status_code in {404, 422}, path
        assert "swordfish" not in response.text and "import" not in response.text
