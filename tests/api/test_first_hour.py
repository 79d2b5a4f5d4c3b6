"""What a new user met in the first hour, over HTTP: the landing overview, notices for query parts that were not
used, NaN rejected, and one error shape for every route."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import make_settings, write_corpus
from xmodal.api.app import create_app
from xmodal.config import Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine


@pytest.fixture
def client(engine: Engine, tmp_path: Path) -> Iterator[TestClient]:
    engine.index([write_corpus(tmp_path / "corpus", images=4, texts=4)])
    with TestClient(create_app(engine=engine)) as test_client:
        yield test_client


@pytest.fixture
def no_clip(
    tmp_path: Path, tiny_clip_dir: Path, encoder_pool: Callable[[str, Settings], Encoder]
) -> Iterator[TestClient]:
    """A home whose CLIP weights are not here (HF_HUB_OFFLINE=1 in the tests): text and BM25 still answer."""
    settings = make_settings(tmp_path / "home", tiny_clip_dir, clip_encoder="open_clip:hf-hub:nobody/absent-clip")
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        engine.index([write_corpus(tmp_path / "corpus", images=2, texts=4)])
        with TestClient(create_app(engine=engine)) as test_client:
            yield test_client


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_overview_says_what_the_home_holds(client: TestClient) -> None:
    body = client.get("/overview").json()
    assert body["items_by_modality"] == {"image": 4, "text": 4}
    spaces = {space["name"]: space for space in body["spaces"]}
    assert spaces["clip"]["available"] and spaces["clip"]["vectors"] >= 8
    assert spaces["clip"]["modalities"] == ["image", "text"]
    assert body["last_run"]["status"] == "finished" and body["last_run"]["indexed"] == 8
    assert 1 <= len(body["examples"]) <= 6  # captions of the sidecar-captioned images


def test_the_overview_names_unavailable_spaces(no_clip: TestClient) -> None:
    spaces = {space["name"]: space for space in no_clip.get("/overview").json()["spaces"]}
    assert not spaces["clip"]["available"] and "weights" in spaces["clip"]["reason"]
    assert spaces["text"]["available"]


def test_an_image_next_to_text_is_reported_when_clip_is_unavailable(no_clip: TestClient) -> None:
    response = no_clip.post("/search", files={"image": ("q.png", _png(), "image/png")}, data={"text": "river"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["results"]  # the text part still answers
    assert list(body["parts_ignored"]) == ["image#1"]
    assert "absent-clip" in body["parts_ignored"]["image#1"]
    plain = no_clip.post("/search", json={"text": "river"}).json()
    assert plain["parts_ignored"] == {}


def test_filters_without_an_equals_sign_are_refused(client: TestClient) -> None:
    response = client.post("/search", files={"image": ("q.png", _png(), "image/png")}, data={"where": "camera"})
    assert response.status_code == 422
    assert response.json()["detail"] == "Filter 'camera' is not of the form key=value."


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_min_score_that_is_not_a_number_is_refused(client: TestClient, value: str) -> None:
    response = client.post(
        "/search", content=f'{{"text": "river", "min_score": {value}}}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], str)
    form = client.post("/search", files={"image": ("q.png", _png(), "image/png")}, data={"min_score": value.lower()})
    assert form.status_code == 422 and "min_score" in form.json()["detail"]


@pytest.mark.parametrize("path", ["/items/abc", "/items/abc/content", "/items/1/thumbnail?size=abc", "/items/-1"])
def test_bad_parameters_answer_the_same_error_shape_as_every_route(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 422
    body = response.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str) and body["detail"].startswith("Invalid request")
    assert client.get("/items/999999").json().keys() == {"detail"}  # the shape of a 404
