"""clip-retrieval 2.45.0 compatibility, tested with its real ClipClient against a live server.

clip-retrieval's package imports Flask, torch add-ons and more at the top; only its ``clip_client`` module is
loaded here (it needs ``requests``), from the installed package (`.ci/run` installs it with ``--no-deps``).
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from PIL import Image

from tests.conftest import live_server, write_corpus
from xmodal.api.app import create_app
from xmodal.engine import Engine


def _clip_client_module() -> ModuleType:
    package = importlib.util.find_spec("clip_retrieval")
    if package is None or package.origin is None:
        pytest.skip("clip-retrieval is not installed: pip install --no-deps clip-retrieval==2.45.0 (.ci/run does)")
    spec = importlib.util.spec_from_file_location("clip_client", Path(package.origin).parent / "clip_client.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def server(engine: Engine, tmp_path: Path) -> Iterator[str]:
    engine.index([write_corpus(tmp_path / "corpus", images=10, texts=10)])
    with live_server(create_app(engine=engine)) as base:
        yield base


def test_clip_client_text_and_image_queries(server: str, tmp_path: Path) -> None:
    module = _clip_client_module()
    client = module.ClipClient(url=f"{server}/knn-service", indice_name="clip", num_images=4)
    results = client.query(text="river forest")
    assert len(results) == 4
    for result in results:
        assert {"id", "similarity", "url", "caption"} <= result.keys()
        assert result["url"] == f"{server}/items/{result['id']}/content"
        assert httpx.get(result["url"]).status_code == 200  # the url serves the file
    assert [r["similarity"] for r in results] == sorted((r["similarity"] for r in results), reverse=True)

    query = tmp_path / "query.png"
    Image.new("RGB", (32, 32), "red").save(query)
    images = client.query(image=str(query))
    assert len(images) == 4 and all(httpx.get(r["url"]).headers["content-type"] == "image/png" for r in images)

    texts = module.ClipClient(
        url=f"{server}/knn-service", indice_name="text", num_images=3, modality=module.Modality.TEXT
    ).query(text="mountain")
    assert len(texts) == 3 and all(r["url"].endswith("/content") for r in texts)

    vector = client.query(embedding_input=[0.1] * 32)  # the tiny CLIP's 32 dimensions
    assert len(vector) == 4


def test_the_back_end_shapes(server: str) -> None:
    assert httpx.get(f"{server}/indices-list").json() == ["clip", "text", "clap"]
    config = httpx.get(f"{server}/config.json").json()
    assert config == {"defaultBackend": server, "defaultIndex": "clip", "urlColumn": "url"}
    body = {  # what clip-retrieval's front end sends, nulls and all, with no content type
        "text": "river", "image": None, "image_url": None, "embedding_input": None, "modality": "image",
        "num_images": 2, "indice_name": "clip", "num_result_ids": 6, "use_mclip": False, "deduplicate": True,
        "use_safety_model": True, "use_violence_detector": True, "aesthetic_score": "", "aesthetic_weight": "0.5",
    }  # fmt: skip
    results = httpx.post(f"{server}/knn-service", content=json.dumps(body)).json()
    assert len(results) == 6
    assert all("url" in r for r in results[:2]) and all(set(r) == {"id", "similarity"} for r in results[2:])
    metadata = httpx.post(
        f"{server}/metadata", content=json.dumps({"ids": [r["id"] for r in results[2:]], "indice_name": "clip"})
    ).json()
    assert [m["id"] for m in metadata] == [r["id"] for r in results[2:]]
    assert all(m["metadata"]["url"].endswith(f"/items/{m['id']}/content") for m in metadata)


def test_an_unknown_index_is_a_404_with_a_message(server: str) -> None:
    response = httpx.post(f"{server}/knn-service", content=json.dumps({"text": "x", "indice_name": "laion5B"}))
    assert response.status_code == 404 and "No index named 'laion5B'" in response.json()["detail"]
    assert httpx.post(f"{server}/metadata", json={"ids": [1], "indice_name": "nope"}).status_code == 404


def test_image_url_is_off_unless_the_host_is_allowed(server: str, engine: Engine) -> None:
    body = {"image_url": "http://169.254.169.254/latest/meta-data", "indice_name": "clip", "num_images": 2}
    response = httpx.post(f"{server}/knn-service", content=json.dumps(body))
    assert response.status_code == 403 and "XMODAL_IMAGE_URL_ALLOW" in response.json()["detail"]
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "blue").save(buffer, format="PNG")
    engine.settings.image_url_allow = ["127.0.0.1"]
    first = httpx.post(f"{server}/knn-service", json={"text": "river", "num_images": 1}).json()[0]
    allowed = {"image_url": first["url"], "indice_name": "clip", "num_images": 2}  # this server's own file
    loopback = httpx.post(f"{server}/knn-service", content=json.dumps(allowed))
    assert loopback.status_code == 403 and "XMODAL_IMAGE_URL_ALLOW_PRIVATE" in loopback.json()["detail"]
    engine.settings.image_url_allow_private = True
    assert len(httpx.post(f"{server}/knn-service", content=json.dumps(allowed)).json()) == 2
    inline = {"image": base64.b64encode(buffer.getvalue()).decode(), "indice_name": "clip", "num_images": 2}
    assert len(httpx.post(f"{server}/knn-service", json=inline).json()) == 2
