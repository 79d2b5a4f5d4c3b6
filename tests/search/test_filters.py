"""Filters are exact: property-based tests over random catalogs and filters, through both filter paths."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xmodal.config import Settings
from xmodal.encoders.base import l2_normalise
from xmodal.engine import Engine
from xmodal.search.query import QueryPart
from xmodal.store.ann import IndexPolicy
from xmodal.store.catalog import ItemRecord, NewEmbedding, WriteRequest
from xmodal.store.merge_policy import MergePolicy
from xmodal.store.writer import SpaceWriter

DIM = 8
EXTENSIONS = {"image": [".jpg", ".png"], "text": [".txt", ".md"], "audio": [".wav", ".ogg"]}

item_strategy = st.fixed_dictionaries(
    {
        "modality": st.sampled_from(["image", "text", "audio"]),
        "folder": st.sampled_from(["a", "b", "a_b"]),
        "ext_choice": st.integers(0, 1),
        "color": st.sampled_from(["red", "blue", "green"]),
        "size": st.sampled_from(["s", "m", "l", 3]),
        "chunks": st.integers(1, 3),
    }
)
filter_strategy = st.fixed_dictionaries(
    {
        "modalities": st.none() | st.lists(st.sampled_from(["image", "text", "audio"]), min_size=1, unique=True),
        "color": st.none() | st.sampled_from(["red", "blue", "green", "purple"]),
        "size": st.none() | st.sampled_from(["s", "m", "3"]),
        "extension": st.none() | st.sampled_from(["jpg", ".PNG", "txt", "wav"]),
        "folder": st.none() | st.sampled_from(["/data/a", "/data/b", "/data/a_b"]),
    }
)


def _build(home: Path, items: list[dict], seed: int, database_url: str | None = None) -> Engine:
    settings = Settings(home=home, database_url=database_url, collapse_duplicates=False, lexical=False)
    engine = Engine.open(settings=settings)
    engine.catalog.save_space(name="text", encoder_spec="test", dim=DIM, fingerprint="test")
    index = SpaceWriter.open(
        engine.settings.spaces_dir / "text",
        space="text",
        encoder_spec="test",
        fingerprint="test",
        dim=DIM,
        dtype="float32",
        policy=IndexPolicy(),
        merges=MergePolicy(),
    )
    rng = np.random.default_rng(seed)
    requests = []
    for number, item in enumerate(items):
        ext = EXTENSIONS[item["modality"]][item["ext_choice"]]
        record = ItemRecord(
            path=f"/data/{item['folder']}/item{number}{ext}",
            source="file:///data",
            size=1,
            mtime_ns=1,
            modality=item["modality"],
            user_metadata={"color": item["color"], "size": item["size"]},
        )
        requests.append(WriteRequest(record, {"text": [NewEmbedding(chunk=c) for c in range(item["chunks"])]}))
    new_ids, _ = engine.catalog.write_items(requests)
    vectors = l2_normalise(rng.normal(size=(len(new_ids["text"]), DIM)))
    index.add(np.asarray(new_ids["text"]), vectors)
    index.publish()
    return engine


def _passes(item: dict, number: int, wanted: dict) -> bool:
    ext = EXTENSIONS[item["modality"]][item["ext_choice"]]
    path = f"/data/{item['folder']}/item{number}{ext}"
    return (
        (wanted["modalities"] is None or item["modality"] in wanted["modalities"])
        and (wanted["color"] is None or item["color"] == wanted["color"])
        and (wanted["size"] is None or str(item["size"]) == wanted["size"])
        and (wanted["extension"] is None or ext == "." + wanted["extension"].lower().lstrip("."))
        and (wanted["folder"] is None or path.startswith(wanted["folder"] + "/"))
    )


def check_filters(
    items: list[dict], wanted: dict, k: int, selective_below: float, seed: int, database_url: str | None = None
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        engine = _build(Path(scratch) / "home", items, seed, database_url)
        engine.settings.filter_selective_below = selective_below  # 0: always post-filter, 1: always a selector
        try:
            query_vector = l2_normalise(np.random.default_rng(seed + 1).normal(size=(1, DIM)))[0]
            where = {key: wanted[key] for key in ("color", "size", "extension", "folder") if wanted[key] is not None}
            results = engine.search(
                parts=[QueryPart.vector("text", query_vector.tolist())],
                k=k,
                modalities=wanted["modalities"],
                where=where,
                space="text",
            )
            index = engine.spaces["text"].stored_index()
            owners = engine.catalog.resolve_vectors(index.ids().tolist())
            best: dict[int, float] = {}
            for vector_id, vector in zip(index.ids().tolist(), index.reconstruct(index.ids()), strict=True):
                owner = owners[vector_id].item_id
                best[owner] = max(best.get(owner, -np.inf), float(vector @ query_vector))
            passing = {item_id for item_id in best if _passes(items[item_id - 1], item_id - 1, wanted)}
            expected = sorted(passing, key=lambda i: (-best[i], i))[:k]
            assert [r.item_id for r in results] == expected
            assert len(results) == min(k, len(passing))
        finally:
            engine.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.lists(item_strategy, min_size=1, max_size=40),
    wanted=filter_strategy,
    k=st.integers(1, 12),
    selective_below=st.sampled_from([0.0, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_filters_are_exact(items: list[dict], wanted: dict, k: int, selective_below: float, seed: int) -> None:
    check_filters(items, wanted, k, selective_below, seed)
