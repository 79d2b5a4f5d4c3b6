"""Text queries at the query precision: bfloat16 copies of the text towers, within a cosine of 1e-3 of the
float32 vectors that indexing makes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_settings
from xmodal.config import QueryPrecision
from xmodal.encoders import build_encoder, device
from xmodal.encoders.base import Encoder
from xmodal.encoders.clip import TextTower

QUERIES = ["a red circle on a dark background", "two cats", "x", "a long query " * 8]


def _encoder(tmp_path: Path, clip_dir: Path, spec: str | None, precision: QueryPrecision) -> Encoder:
    settings = make_settings(tmp_path, clip_dir, query_precision=precision)
    return build_encoder(spec or settings.clip_encoder, settings)


@pytest.mark.parametrize("spec", [None, "sentence:all-MiniLM-L6-v2"], ids=["clip", "minilm"])
def test_bfloat16_queries_are_within_a_cosine_of_the_float32_vectors(
    spec: str | None, tmp_path: Path, tiny_clip_dir: Path
) -> None:
    encoder = _encoder(tmp_path, tiny_clip_dir, spec, QueryPrecision.BFLOAT16)
    texts, queries = encoder.encode_texts(QUERIES), encoder.encode_queries(QUERIES)
    assert queries.dtype == np.float32 and queries.shape == texts.shape
    assert np.allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)
    cosines = (texts * queries).sum(axis=1)
    assert cosines.min() > 0.999
    assert not np.array_equal(texts, queries)  # really the bfloat16 copy


def test_the_clip_query_copy_holds_the_text_tower_only(tmp_path: Path, tiny_clip_dir: Path) -> None:
    encoder = _encoder(tmp_path, tiny_clip_dir, None, QueryPrecision.BFLOAT16)
    encoder.encode_queries(["warm"])
    tower = encoder._query_copy[0]  # type: ignore[index]
    assert isinstance(tower, TextTower)
    assert not hasattr(tower, "visual")
    assert str(next(tower.transformer.parameters()).dtype) == "torch.bfloat16"
    assert str(next(encoder._model.transformer.parameters()).dtype) == "torch.float32"  # indexing stays float32


def test_float32_queries_are_the_text_vectors(tmp_path: Path, tiny_clip_dir: Path) -> None:
    encoder = _encoder(tmp_path, tiny_clip_dir, None, QueryPrecision.FLOAT32)
    assert np.array_equal(encoder.encode_queries(QUERIES), encoder.encode_texts(QUERIES))


@pytest.mark.parametrize("native", [True, False], ids=["native-bfloat16", "no-bfloat16"])
def test_auto_is_bfloat16_only_where_the_cpu_computes_it(
    native: bool, tmp_path: Path, tiny_clip_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device, "native_bfloat16", lambda: native)
    encoder = _encoder(tmp_path, tiny_clip_dir, None, QueryPrecision.AUTO)
    same = np.array_equal(encoder.encode_queries(QUERIES), encoder.encode_texts(QUERIES))
    assert same is not native
    assert encoder._query_copy is not None and (encoder._query_copy[0] is not None) is native


def test_empty_query_list(tmp_path: Path, tiny_clip_dir: Path) -> None:
    encoder = _encoder(tmp_path, tiny_clip_dir, None, QueryPrecision.BFLOAT16)
    assert encoder.encode_queries([]).shape == (0, encoder.dim)


def test_a_model_that_cannot_be_copied_answers_queries_at_float32(
    tmp_path: Path, tiny_clip_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: object) -> None:
        raise RuntimeError("cannot cast this model")

    monkeypatch.setattr(TextTower, "copy_of", classmethod(refuse))
    encoder = _encoder(tmp_path, tiny_clip_dir, None, QueryPrecision.BFLOAT16)
    assert np.array_equal(encoder.encode_queries(QUERIES), encoder.encode_texts(QUERIES))
