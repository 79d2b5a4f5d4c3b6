"""`xmodal import clip-retrieval`: a folder made by clip-retrieval's own writer, imported without embedding again,
then queried with clip-retrieval's real ClipClient through ``/knn-service``.

The folder is written by ``clip_retrieval/clip_inference/writer.py`` of the installed clip-retrieval 2.45.0 (it
needs only fsspec, numpy and pandas), fed what its mapper hands it: L2-normalised float16 embeddings, the file
names, the captions and each sample's JSON metadata. Runs on SQLite and PostgreSQL (this package's ``settings``).
"""

from __future__ import annotations

import importlib.util
import json
import random
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import faiss
import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from tests.api.test_clip_retrieval import _clip_client_module
from tests.conftest import live_server, random_image, random_text
from xmodal.api.app import create_app
from xmodal.cli import app
from xmodal.config import Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine
from xmodal.search.query import QueryPart
from xmodal.search.searcher import encode_part

QUERY = "river forest"


def _writer_module() -> ModuleType:
    """clip-retrieval's ``clip_inference/writer.py``, loaded alone (its package imports Flask, torch add-ons...)."""
    package = importlib.util.find_spec("clip_retrieval")
    if package is None or package.origin is None:
        pytest.skip("clip-retrieval is not installed: pip install --no-deps clip-retrieval==2.45.0 (.ci/run does)")
    spec = importlib.util.spec_from_file_location(
        "clip_retrieval_writer", Path(package.origin).parent / "clip_inference" / "writer.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _unit16(vectors: np.ndarray) -> np.ndarray:
    """What clip-retrieval's mapper stores: features divided by their norm, as float16."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float16)


def _make_folder(root: Path, images: Path, encoder: Encoder) -> tuple[np.ndarray, list[dict[str, object]]]:
    """Two partitions written by clip-retrieval's NumpyWriter: 6 local images, then 4 URL-only samples and one with
    neither a file here nor a URL. Returns the image embeddings in row order, and what each row should become."""
    writer_module = _writer_module()
    rng = random.Random(7)
    images.mkdir()
    rows: list[dict[str, object]] = []
    embeddings = []
    partitions = [
        [(images / f"photo_{n}.png", f"https://example.org/local_{n}.png" if n % 2 else None) for n in range(6)],
        [(Path(f"/elsewhere/picture_{n}.jpg"), f"https://example.org/picture_{n}.jpg") for n in range(4)]
        + [(Path("/nowhere/lost.png"), None)],
    ]
    for number, samples in enumerate(partitions):
        pictures = [random_image(rng) for _ in samples]
        for (path, _), picture in zip(samples, pictures, strict=True):
            if path.parent == images:
                picture.save(path)
        captions = [random_text(rng, 5) for _ in samples]
        image_embs = _unit16(encoder.encode_images(pictures))
        text_embs = _unit16(encoder.encode_texts(captions))
        metadata = [json.dumps({"url": url, "width": 48} if url else {"width": 48}) for _, url in samples]
        sink = writer_module.NumpyWriter(
            partition_id=number,
            output_folder=str(root),
            enable_text=True,
            enable_image=True,
            enable_metadata=True,
            output_partition_count=2,
        )
        sink({
            "image_embs": image_embs, "text_embs": text_embs, "image_filename": [str(p) for p, _ in samples],
            "text": captions, "metadata": metadata,
        })  # fmt: skip
        sink.flush()
        embeddings.append(image_embs)
        rows.extend({"path": str(p), "url": url, "caption": c} for (p, url), c in zip(samples, captions, strict=True))
    return np.concatenate(embeddings).astype(np.float32), rows


@pytest.fixture
def imported(
    settings: Settings,
    tmp_path: Path,
    encoder_pool: Callable[[str, Settings], Encoder],
    other_tiny_clip_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Engine, np.ndarray, list[dict[str, object]], str]:
    model = f"open_clip:local-dir:{other_tiny_clip_dir}"  # not the clip space's configured model: the import's
    original, rows = _make_folder(tmp_path / "clip-out", tmp_path / "images", encoder_pool(model, settings))
    assert sorted(p.name for p in (tmp_path / "clip-out" / "img_emb").iterdir()) == ["img_emb_0.npy", "img_emb_1.npy"]
    for field in ("home", "clip_encoder", "clap_encoder", "device", "vector_dtype", "database_url"):
        value = getattr(settings, field)
        if value is not None:
            monkeypatch.setenv(f"XMODAL_{field.upper()}", str(value))
    monkeypatch.setenv("XMODAL_OCR", "false")
    result = CliRunner().invoke(
        app,
        ["import", "clip-retrieval", str(tmp_path / "clip-out"), "--space", "clip", "--model", model,
         "--files", str(tmp_path / "images"), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["items"], report["local_files"], report["url_only"], report["skipped_count"]) == (10, 6, 4, 1)
    engine = Engine.open(settings=settings, build_encoder=encoder_pool)
    return engine, original, rows, model


def test_imported_vectors_and_metadata_equal_the_originals(
    imported: tuple[Engine, np.ndarray, list[dict[str, object]], str],
) -> None:
    engine, original, rows, model = imported
    with engine:
        space = engine.spaces["clip"]
        assert space.encoder.spec == model  # text queries are encoded by the model the vectors came from
        ids, vectors = space.stored_index().vectors()
        hits = engine.catalog.resolve_vectors(ids.tolist())
        items = engine.catalog.get_items([hit.item_id for hit in hits.values()])
        seen = set()
        for vector_id, vector in zip(ids.tolist(), vectors, strict=True):
            item = items[hits[vector_id].item_id]
            position = item.user_metadata["clip_retrieval_id"]
            seen.add(position)
            assert np.array_equal(vector, original[position])  # the very float16 values, not re-embedded
            row = rows[position]
            assert item.caption == row["caption"] and item.modality == "image"
            assert item.user_metadata["width"] == 48 and item.user_metadata.get("url") == row["url"]
            assert item.path == (row["path"] if position < 6 else row["url"])  # a local file, or served by URL
        assert seen == set(range(10))  # the row with neither a file nor a URL was skipped


def test_clip_client_queries_the_imported_index(
    imported: tuple[Engine, np.ndarray, list[dict[str, object]], str],
) -> None:
    engine, original, rows, _ = imported
    module = _clip_client_module()
    with engine, live_server(create_app(engine=engine)) as base:
        client = module.ClipClient(url=f"{base}/knn-service", indice_name="clip", num_images=5, deduplicate=False)
        results = client.query(text=QUERY)
        # what clip-retrieval's back end answers: a flat inner-product search of its image embeddings (row ids)
        query = encode_part(engine.spaces["clip"], QueryPart.text(QUERY))
        index = faiss.IndexFlatIP(original.shape[1])
        index.add(original[:10])
        scores, positions = index.search(query.reshape(1, -1), 5)
        assert [r["clip_retrieval_id"] for r in results] == positions[0].tolist()
        assert np.allclose([r["similarity"] for r in results], scores[0], atol=1e-5)
        for result in results:
            row = rows[result["clip_retrieval_id"]]
            assert result["caption"] == row["caption"]
            if result["clip_retrieval_id"] >= 6:  # URL-only: the URL clip-retrieval would have answered
                assert result["url"] == row["url"]
            else:
                assert result["url"] == f"{base}/items/{result['id']}/content"
        # our own content and thumbnail routes send a URL-only item's client to where it is
        url_only = [r for r in engine.search(QUERY, k=10, space="clip") if r.path.startswith("http")]
        assert url_only
        with httpx.Client(base_url=base, timeout=30, follow_redirects=False) as http:
            for route in ("content", "thumbnail"):
                moved = http.get(f"/items/{url_only[0].item_id}/{route}")
                assert moved.status_code == 307 and moved.headers["location"] == url_only[0].path, route


def test_only_an_image_index_is_enough(
    settings: Settings, tmp_path: Path, encoder_pool: Callable[[str, Settings], Encoder]
) -> None:
    """An index folder (clip-retrieval's `index` output: image.index and metadata/) without the embeddings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "index-out"
    (folder / "metadata").mkdir(parents=True)
    vectors = _unit16(np.random.default_rng(3).normal(size=(7, 32))).astype(np.float32)
    index = faiss.IndexFlatIP(32)
    index.add(vectors)
    faiss.write_index(index, str(folder / "image.index"))
    urls = [f"https://example.org/{n}.jpg" for n in range(7)]
    table = pa.table({"image_path": [f"{n}.jpg" for n in range(7)], "caption": ["c"] * 7, "url": urls})
    pq.write_table(table, folder / "metadata" / "metadata_0.parquet")
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        report = engine.import_clip_retrieval(folder, space="clip", encoder_spec=engine.spaces["clip"].encoder.spec)
        assert (report.items, report.url_only) == (7, 7)
        ids, stored = engine.spaces["clip"].stored_index().vectors()
        hits = engine.catalog.resolve_vectors(ids.tolist())
        items = engine.catalog.get_items([hit.item_id for hit in hits.values()])
        order = [items[hits[i].item_id].user_metadata["clip_retrieval_id"] for i in ids.tolist()]
        assert np.array_equal(stored, vectors[order])
        # a space holding another model's vectors is refused, with what to do
        with pytest.raises(Exception, match="spaces drop clip"):
            engine.import_clip_retrieval(folder, space="clip", encoder_spec="open_clip:ViT-B-32/laion2b_s34b_b79k")


def test_a_folder_of_text_embeddings_becomes_text_items(
    settings: Settings, tmp_path: Path, encoder_pool: Callable[[str, Settings], Encoder]
) -> None:
    writer_module = _writer_module()
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        encoder = engine.spaces["clip"].encoder
        captions = [random_text(random.Random(n), 4) for n in range(5)]
        text_embs = _unit16(encoder.encode_texts(captions))
        sink = writer_module.NumpyWriter(
            partition_id=0, output_folder=str(tmp_path / "texts"), enable_text=True, enable_image=False,
            enable_metadata=True, output_partition_count=1,
        )  # fmt: skip
        urls = [f"https://example.org/doc/{n}" for n in range(5)]
        sink({"text_embs": text_embs, "text": captions, "metadata": [json.dumps({"url": url}) for url in urls]})
        sink.flush()
        report = engine.import_clip_retrieval(tmp_path / "texts", space="clip", encoder_spec=encoder.spec)
        assert (report.items, report.url_only) == (5, 5)
        found = engine.search(captions[2], k=5, space="clip", modalities=["text"])
        assert {result.path for result in found} == set(urls)
        assert all(result.modality == "text" for result in found)
        best = engine.search(text=None, parts=[QueryPart.vector("clip", text_embs[2].astype(np.float32).tolist())], k=1)
        assert best[0].path == urls[2] and best[0].text_excerpt == captions[2]
