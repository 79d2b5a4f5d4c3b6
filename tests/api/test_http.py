"""The HTTP API: search by text and by image upload, items, files, thumbnails, and 4xx for bad input."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import write_corpus
from xmodal.api.app import create_app
from xmodal.engine import Engine


@pytest.fixture
def client(engine: Engine, tmp_path: Path) -> Iterator[TestClient]:
    engine.index([write_corpus(tmp_path / "corpus", images=8, texts=8)])
    engine.settings.max_upload_bytes = 200_000
    with TestClient(create_app(engine=engine)) as test_client:
        yield test_client


def _png(size: tuple[int, int] = (32, 32), colour: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_text_search(client: TestClient) -> None:
    response = client.post("/search", json={"text": "river forest", "k": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["results"]) == 5
    assert sorted(body["spaces_searched"]) == ["clap", "clip", "lexical", "text"]
    first = body["results"][0]
    assert first["content_url"] == f"/items/{first['id']}/content"


def test_text_search_in_one_space_and_modality(client: TestClient) -> None:
    body = client.post("/search", json={"text": "river", "k": 3, "space": "text", "modalities": ["text"]}).json()
    assert body["spaces_searched"] == ["text"]
    assert {hit["modality"] for hit in body["results"]} == {"text"}


def test_image_upload_search(client: TestClient) -> None:
    response = client.post("/search", files={"image": ("q.png", _png(), "image/png")}, data={"k": "3"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["spaces_searched"] == ["clip"] and len(body["results"]) == 3


def _wav(seconds: float = 1.0) -> bytes:
    import random

    import soundfile as sf

    from tests.conftest import synth_audio

    buffer = io.BytesIO()
    sf.write(buffer, synth_audio(random.Random(5), seconds), 16_000, format="WAV")
    return buffer.getvalue()


def test_audio_upload_search(client: TestClient, engine: Engine, tmp_path: Path) -> None:
    from tests.conftest import write_audio_corpus

    engine.index([write_audio_corpus(tmp_path / "audio", clips=4, texts=0)])
    response = client.post("/search", files={"audio": ("q.wav", _wav(), "audio/wav")}, data={"k": "3"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["spaces_searched"] == ["clap"]
    hits = [hit for hit in body["results"] if hit["modality"] == "audio"]
    assert hits and all(hit["time_span"] is not None and hit["duration"] for hit in hits)


def test_bad_audio_upload_is_422(client: TestClient) -> None:
    response = client.post("/search", files={"audio": ("q.wav", b"RIFF....WAVEfmt garbage", "audio/wav")})
    assert response.status_code == 422
    assert "audio could not be read" in response.json()["detail"]


def test_item_content_and_thumbnail(client: TestClient) -> None:
    hits = client.post("/search", json={"text": "castle", "k": 10, "modalities": ["image"]}).json()["results"]
    item_id = hits[0]["id"]
    item = client.get(f"/items/{item_id}").json()
    assert item["modality"] == "image" and item["path"] == hits[0]["path"]
    content = client.get(f"/items/{item_id}/content")
    assert content.status_code == 200 and content.content == Path(item["path"]).read_bytes()
    thumbnail = client.get(f"/items/{item_id}/thumbnail", params={"size": 16})
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumbnail.content)).size) <= 16


@pytest.mark.parametrize(
    ("kwargs", "status", "phrase"),
    [
        ({"json": {}}, 422, "text"),
        ({"json": {"text": ""}}, 422, "text"),
        ({"json": {"text": "x", "k": 0}}, 422, "k"),
        ({"json": {"text": "x", "k": 100000}}, 422, "XMODAL_MAX_K"),
        ({"json": {"text": "x", "space": "nope"}}, 404, "No space named"),
        ({"json": {"text": "x", "modalities": ["smell"]}}, 422, "modalities"),
        ({"json": {"text": "x", "unknown": 1}}, 422, "unknown"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "Invalid"),
        ({"content": b"text=hello", "headers": {"content-type": "text/plain"}}, 415, "multipart"),
        ({"files": {"image": ("q.png", b"this is not an image", "image/png")}}, 422, "could not be read"),
        ({"files": {"image": ("q.png", b"", "image/png")}}, 422, "empty"),
        ({"files": {"image": ("big.png", b"0" * 300_000, "image/png")}}, 413, "limit"),
        ({"files": {"other": ("q.png", b"x", "image/png")}}, 422, "image"),
        ({"files": {"image": ("q.png", _png(), "image/png")}, "data": {"k": "many"}}, 422, "k"),
        ({"json": {"text": "x" * 20_000}}, 422, "XMODAL_MAX_QUERY_CHARS"),
    ],
)
def test_bad_requests_are_4xx_with_a_message(client: TestClient, kwargs: dict, status: int, phrase: str) -> None:
    response = client.post("/search", **kwargs)
    assert response.status_code == status, response.text
    assert phrase in response.json()["detail"]


def test_image_query_in_a_text_only_space_is_refused(client: TestClient) -> None:
    response = client.post("/search", files={"image": ("q.png", _png(), "image/png")}, data={"space": "text"})
    assert response.status_code == 422
    assert "cannot embed image" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/items/999999", "/items/999999/content", "/items/999999/thumbnail"])
def test_unknown_ids_are_404(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404 and "999999" in response.json()["detail"]


@pytest.mark.parametrize("item_id", ["abc", "-1", str(2**64), "1.5"])
def test_ids_that_are_not_catalog_ids_are_422(client: TestClient, item_id: str) -> None:
    assert client.get(f"/items/{item_id}").status_code == 422


def test_thumbnail_of_a_text_item_is_415(client: TestClient) -> None:
    hits = client.post("/search", json={"text": "river", "k": 1, "modalities": ["text"]}).json()["results"]
    assert client.get(f"/items/{hits[0]['id']}/thumbnail").status_code == 415


def test_file_gone_from_disk_is_404(client: TestClient) -> None:
    hits = client.post("/search", json={"text": "river", "k": 1, "modalities": ["image"]}).json()["results"]
    Path(hits[0]["path"]).unlink()
    response = client.get(f"/items/{hits[0]['id']}/content")
    assert response.status_code == 404 and "no longer on disk" in response.json()["detail"]


def test_health_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    schema = client.get("/openapi.json").json()
    content = schema["paths"]["/search"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(content)


def test_json_query_parts_filters_explain_and_pages(client: TestClient, engine: Engine, tmp_path: Path) -> None:
    import base64

    docs = tmp_path / "shop"
    docs.mkdir()
    (docs / "wool.txt").write_text("A red wool dress, warm and thick for cold winter days.")
    (docs / "silk.txt").write_text("A red silk dress, light and airy for summer.")
    (docs / "silk.json").write_text('{"fabric": "silk"}')
    engine.index([docs])
    body = {
        "parts": [{"text": "red dress"}, {"text": "warm wool", "weight": -1}],
        "space": "text",
        "modalities": ["text"],
        "k": 2,
        "explain": True,
    }
    response = client.post("/search", json=body)
    assert response.status_code == 200, response.text
    hits = response.json()["results"]
    assert [Path(h["path"]).name for h in hits] == ["silk.txt", "wool.txt"]
    assert all(sum(c["contribution"] for c in h["explanation"]) == pytest.approx(h["score"]) for h in hits)

    filtered = client.post("/search", json={"text": "red dress", "where": {"fabric": "silk"}}).json()["results"]
    assert [Path(h["path"]).name for h in filtered] == ["silk.txt"]
    assert filtered[0]["metadata"] == {"fabric": "silk"}

    more = client.post("/search", json={"parts": [{"item": filtered[0]["id"]}], "space": "text", "k": 1}).json()
    assert filtered[0]["id"] not in [h["id"] for h in more["results"]]

    first = client.post("/search", json={"text": "river", "k": 3}).json()
    second = client.post("/search", json={"text": "river", "k": 3, "cursor": first["next_cursor"]}).json()
    assert not {h["id"] for h in first["results"]} & {h["id"] for h in second["results"]}

    image = base64.b64encode(_png()).decode()
    by_image = client.post("/search", json={"parts": [{"image": image}], "k": 2})
    assert by_image.status_code == 200 and by_image.json()["spaces_searched"] == ["clip"]


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        ({"parts": [{"text": "a", "item": 3}]}, "exactly one"),
        ({"parts": [{}]}, "exactly one"),
        ({"parts": [{"vector": [0.1, 0.2]}]}, "space"),
        ({"parts": [{"image": "%%%not base64"}]}, "base64"),
        ({"parts": [{"text": "boots", "weight": -1}]}, "positive weight"),
        ({"text": "x", "cursor": "garbage"}, "cursor"),
        ({"text": "x", "fusion": "median"}, "fusion"),
        ({"text": "x", "diversity": 2}, "diversity"),
        ({"text": "x", "where": {"": "y"}}, "key=value"),
        ({"parts": [{"item": 999999}]}, "999999"),
    ],
)
def test_bad_query_models_are_4xx(client: TestClient, body: dict, phrase: str) -> None:
    response = client.post("/search", json=body)
    assert 400 <= response.status_code < 500, response.text
    assert phrase in response.json()["detail"]
