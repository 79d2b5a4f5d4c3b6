"""The HTTP API as an attacker sends it: bodies past the limit (chunked too), too many pixels, forged and foreign
cursors, private reads, admin paths outside the sources, image URLs that point inside, colliding metadata, the
docs without internet, and every heavy route under the concurrency limit."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import SecretStr

from tests.conftest import write_corpus
from xmodal.api.app import create_app
from xmodal.engine import Engine


@pytest.fixture(params=["sqlite"])  # these are HTTP-layer checks; one catalog is enough
def settings(request: pytest.FixtureRequest, settings: object) -> object:
    return settings


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = write_corpus(tmp_path / "corpus", images=5, texts=3)
    # an img2dataset-style sidecar: its keys collide with the fields /knn-service adds
    (root / "image_001.json").write_text(
        json.dumps({"url": "https://origin.example/1.jpg", "caption": "c", "path": "p"})
    )
    return root


@pytest.fixture
def client(engine: Engine, corpus: Path) -> Iterator[TestClient]:
    engine.index([corpus])
    with TestClient(create_app(engine=engine)) as test_client:
        yield test_client


def _png(size: tuple[int, int] = (32, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "red").save(buffer, format="PNG")
    return buffer.getvalue()


def _raw(client: TestClient, path: str, chunks: Iterator[bytes], headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """Send a streamed body straight through the ASGI stack; the status, the body and the chunks it pulled."""
    answer: dict[str, Any] = {"pulled": 0, "body": b""}

    async def receive() -> dict[str, Any]:
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        answer["pulled"] += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("testserver", 80), "state": {}}  # fmt: skip
    assert client.portal is not None
    client.portal.call(client.app, scope, receive, send)
    return answer


def test_a_chunked_body_is_cut_off_at_the_limit(client: TestClient, engine: Engine) -> None:
    engine.settings.max_request_bytes = 2**20
    for path in ("/search", "/knn-service", "/metadata"):
        _cut_off(client, path)


def _cut_off(client: TestClient, path: str) -> None:
    head = b'--b\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\nContent-Type: image/png\r\n\r\n'
    forty = iter([head] + [b"x" * 2**16] * 640)  # a 40 MiB upload, no Content-Length
    kind = b"multipart/form-data; boundary=b" if path == "/search" else b"application/json"
    answer = _raw(client, path, forty, [(b"content-type", kind)])
    assert answer["status"] == 413
    assert "XMODAL_MAX_REQUEST_BYTES" in json.loads(answer["body"])["detail"]
    assert answer["pulled"] <= 18  # 1 MiB and one chunk past it, not 40 MiB


def test_a_declared_length_over_the_limit_is_refused_unread(client: TestClient, engine: Engine) -> None:
    engine.settings.max_request_bytes = 2**20
    headers = [(b"content-type", b"application/json"), (b"content-length", str(40 * 2**20).encode())]
    answer = _raw(client, "/search", iter([b"{}"] * 10), headers)
    assert answer["status"] == 413 and answer["pulled"] == 0


def test_a_pixel_budget_covers_all_image_parts(client: TestClient, engine: Engine) -> None:
    engine.settings.max_query_pixels = 10_000_000
    big = base64.b64encode(_png((2000, 2000))).decode()  # 4 MP each, tiny as PNG
    response = client.post("/search", json={"parts": [{"image": big}] * 3})
    assert response.status_code == 422
    assert "XMODAL_MAX_QUERY_PIXELS" in response.json()["detail"]
    assert client.post("/search", json={"parts": [{"image": big}] * 2, "k": 2}).status_code == 200


def test_forged_and_foreign_cursors_are_400_at_once(client: TestClient) -> None:
    forged = base64.urlsafe_b64encode(json.dumps({"offset": 10**9}).encode()).decode().rstrip("=")
    started = time.perf_counter()
    response = client.post("/search", json={"text": "river", "cursor": forged})
    assert time.perf_counter() - started < 0.5
    assert response.status_code == 400 and "not one this server gave out" in response.json()["detail"]
    assert client.post("/search", json={"text": "river", "cursor": f"{10**9}.AAAA"}).status_code == 400

    first = client.post("/search", json={"text": "river", "k": 3}).json()
    cursor = first["next_cursor"]
    second = client.post("/search", json={"text": "river", "k": 3, "cursor": cursor}).json()
    assert not {hit["id"] for hit in first["results"]} & {hit["id"] for hit in second["results"]}
    foreign = client.post("/search", json={"text": "forest", "k": 3, "cursor": cursor})
    assert foreign.status_code == 400
    other_filter = client.post(
        "/search", json={"text": "river", "k": 3, "cursor": cursor, "where": {"extension": "png"}}
    )
    assert other_filter.status_code == 400


def test_depth_and_candidates_are_bounded(client: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from xmodal.search import searcher

    sizes: list[int] = []
    matrix = searcher.similarity_matrix
    monkeypatch.setattr(
        searcher, "similarity_matrix", lambda order, *rest: sizes.append(len(order)) or matrix(order, *rest)
    )
    engine.settings.max_candidates = 5
    body = client.post("/search", json={"text": "river", "k": 1000, "collapse_duplicates": True}).json()
    assert sizes and max(sizes) <= 5 and len(body["results"]) <= 5

    engine.settings.max_candidates, engine.settings.max_result_depth = 2000, 4
    page = client.post("/search", json={"text": "river", "k": 3}).json()
    last = client.post("/search", json={"text": "river", "k": 3, "cursor": page["next_cursor"]}).json()
    assert len(last["results"]) == 1 and last["next_cursor"] is None  # rank 4 is the deepest served


class _CountingSlots:
    """Stands in for the search semaphore and counts who waited on it."""

    def __init__(self) -> None:
        self.entered = 0

    async def __aenter__(self) -> None:
        self.entered += 1

    async def __aexit__(self, *exc: object) -> None:
        return None


def test_heavy_routes_wait_for_a_search_slot(client: TestClient) -> None:
    image = next(
        h for h in client.post("/search", json={"text": "x", "k": 20, "modalities": ["image"]}).json()["results"]
    )
    calls = [
        lambda: client.post("/search", json={"text": "river"}),
        lambda: client.post("/knn-service", json={"text": "river", "indice_name": "clip"}),
        lambda: client.get(f"/items/{image['id']}/thumbnail"),
        lambda: client.get(f"/items/{image['id']}/content"),
    ]
    for call in calls:
        slots = client.app.state.search_slots = _CountingSlots()  # type: ignore[attr-defined]
        assert call().status_code == 200
        assert slots.entered == 1


def test_thumbnails_are_cached_and_answer_304(
    client: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xmodal.api import thumbnails

    hit = client.post("/search", json={"text": "x", "k": 20, "modalities": ["image"]}).json()["results"][0]
    first = client.get(f"/items/{hit['id']}/thumbnail", params={"size": 100})
    assert first.status_code == 200 and max(Image.open(io.BytesIO(first.content)).size) <= 128
    assert list((engine.settings.home / "thumbnails" / str(hit["id"])).glob("128-*.jpg"))
    etag = first.headers["etag"]
    again = client.get(f"/items/{hit['id']}/thumbnail", params={"size": 100}, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""

    monkeypatch.setattr(thumbnails, "render", lambda *args: pytest.fail("decoded again"))
    cached = client.get(f"/items/{hit['id']}/thumbnail", params={"size": 120})  # same bucket: from disk
    assert cached.status_code == 200 and cached.content == first.content


def test_content_is_inline_and_answers_head(client: TestClient) -> None:
    hit = client.post("/search", json={"text": "x", "k": 1, "modalities": ["image"]}).json()["results"][0]
    body = client.get(f"/items/{hit['id']}/content")
    assert body.status_code == 200 and body.headers["content-disposition"].startswith("inline")
    head = client.head(f"/items/{hit['id']}/content")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(body.content) == Path(hit["path"]).stat().st_size


def test_a_file_swapped_for_a_link_out_is_not_served(client: TestClient, tmp_path: Path) -> None:
    hit = client.post("/search", json={"text": "x", "k": 1, "modalities": ["image"]}).json()["results"][0]
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    Path(hit["path"]).unlink()
    Path(hit["path"]).symlink_to(secret)
    response = client.get(f"/items/{hit['id']}/content")
    assert response.status_code == 403 and "private" not in response.text


def test_a_read_key_makes_reads_private(client: TestClient, engine: Engine) -> None:
    engine.settings.read_api_key = SecretStr("reader")
    engine.settings.api_key = SecretStr("admin")
    calls = [
        lambda h: client.get("/items/1/content", headers=h),
        lambda h: client.get("/items/1", headers=h),
        lambda h: client.post("/search", json={"text": "river"}, headers=h),
        lambda h: client.post("/knn-service", json={"text": "river"}, headers=h),
    ]
    for call in calls:
        refused = call({})
        assert refused.status_code == 401 and "XMODAL_READ_API_KEY" in refused.json()["detail"]
        assert call({"X-API-Key": "wrong"}).status_code == 401
        assert call({"X-API-Key": "reader"}).status_code == 200
        assert call({"X-API-Key": "admin"}).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_admin_index_only_takes_paths_under_the_sources(
    client: TestClient, engine: Engine, corpus: Path, tmp_path: Path
) -> None:
    engine.settings.api_key = SecretStr("admin")
    key = {"X-API-Key": "admin"}
    off = client.post("/admin/index", json={"paths": [str(corpus)]}, headers=key)
    assert off.status_code == 403 and "XMODAL_SOURCES" in off.json()["detail"]
    engine.settings.sources = [corpus.resolve()]
    for outside in ("/etc", f"{corpus}/../..", str(tmp_path)):
        refused = client.post("/admin/index", json={"paths": [outside]}, headers=key)
        assert refused.status_code == 403 and outside in refused.json()["detail"]
    assert client.post("/admin/index", json={"paths": [str(corpus)]}, headers=key).status_code == 202


def test_image_url_to_an_internal_address_is_refused(client: TestClient, engine: Engine) -> None:
    for host in ["localhost", "127.0.0.1", "169.254.169.254", "[::1]", "224.0.0.1", "10.0.0.8", "[::ffff:127.0.0.1]"]:
        engine.settings.image_url_allow = [host.strip("[]")]
        url = f"http://{host}/latest/meta-data"
        response = client.post("/knn-service", json={"image_url": url, "indice_name": "clip"})
        assert response.status_code == 403 and "internal address" in response.json()["detail"], host


@contextmanager
def _image_server(folder: Path) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_image_url_connects_to_the_address_it_checked(
    client: TestClient, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "q.png").write_bytes(_png())
    lookups: list[str] = []
    real = anyio.getaddrinfo

    async def resolver(host: str, port: int, **kwargs: Any) -> Any:
        lookups.append(host)  # "images.example" exists for this test only: a second lookup would fail
        return await real("127.0.0.1" if host == "images.example" else host, port, **kwargs)

    monkeypatch.setattr(anyio, "getaddrinfo", resolver)
    engine.settings.image_url_allow = ["images.example"]
    with _image_server(tmp_path) as port:
        url = f"http://images.example:{port}/q.png"
        refused = client.post("/knn-service", json={"image_url": url, "indice_name": "clip"})
        assert refused.status_code == 403 and "127.0.0.1" in refused.json()["detail"]
        engine.settings.image_url_allow_private = True
        response = client.post("/knn-service", json={"image_url": url, "indice_name": "clip", "num_images": 2})
    assert response.status_code == 200, response.text
    assert len(response.json()) == 2 and lookups == ["images.example", "images.example"]  # once per request


def test_image_url_fetches_are_bounded_in_bytes_and_time(client: TestClient, engine: Engine) -> None:
    """An allowed host that sends an endless body is cut off at the upload limit (413, not read to the end), and
    one that stalls is given up after XMODAL_IMAGE_URL_TIMEOUT_S (422): neither ties the server up."""
    release = threading.Event()
    sent: dict[str, int] = {"big": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None: ...

        def do_GET(self) -> None:  # the http.server API's name
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            if self.path == "/big.png":  # 64 MiB unless the client stops reading
                try:
                    for _ in range(1024):
                        self.wfile.write(b"\0" * 65536)
                        sent["big"] += 65536
                except OSError:
                    return
            else:
                self.wfile.write(b"\x89PNG")
                self.wfile.flush()
                release.wait(timeout=60)  # stalls until the test is over

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    engine.settings.image_url_allow = ["127.0.0.1"]
    engine.settings.image_url_allow_private = True
    engine.settings.max_upload_bytes = 1_000_000
    engine.settings.image_url_timeout_s = 1.0
    port = server.server_address[1]
    try:
        big = client.post("/knn-service", json={"image_url": f"http://127.0.0.1:{port}/big.png", "indice_name": "clip"})
        assert big.status_code == 413 and "over 1000000 bytes" in big.json()["detail"]
        started = time.perf_counter()
        slow = client.post(
            "/knn-service", json={"image_url": f"http://127.0.0.1:{port}/slow.png", "indice_name": "clip"}
        )
        assert slow.status_code == 422 and "XMODAL_IMAGE_URL_TIMEOUT_S" in slow.json()["detail"]
        assert time.perf_counter() - started < 30  # given up at the limit, not when the sender stops
    finally:
        release.set()
        server.shutdown()
        server.server_close()
    assert sent["big"] < 64 * 1024 * 1024  # the endless body was not read to its end


def test_knn_service_keeps_sidecar_keys_apart(client: TestClient) -> None:
    response = client.post(
        "/knn-service", json={"text": "x", "indice_name": "clip", "num_images": 50, "modality": "image"}
    )
    assert response.status_code == 200, response.text
    tagged = next(r for r in response.json() if r["path"].endswith("image_001.png"))
    assert tagged["url"].endswith(f"/items/{tagged['id']}/content") and tagged["path"].endswith("image_001.png")
    assert tagged["metadata"] == {"url": "https://origin.example/1.jpg", "caption": "c", "path": "p"}
    metadata = client.post("/metadata", json={"ids": [tagged["id"]]}).json()[0]["metadata"]
    assert metadata["url"] == tagged["url"] and metadata["metadata"]["url"] == "https://origin.example/1.jpg"


def test_docs_load_their_assets_from_this_server(client: TestClient) -> None:
    for page, script in [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")]:
        html = client.get(page)
        assert html.status_code == 200 and f"/docs-assets/{script}" in html.text
        assert "cdn.jsdelivr" not in html.text and "fonts.googleapis" not in html.text
        asset = client.get(f"/docs-assets/{script}")
        assert asset.status_code == 200 and len(asset.content) > 100_000
