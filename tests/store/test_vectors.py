"""The FAISS side of the store: ids, removal, atomic save, fingerprint checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xmodal.encoders.base import l2_normalise
from xmodal.errors import SpaceMismatchError
from xmodal.store.vectors import INDEX_FILE, SpaceHeader, VectorIndex


def _vectors(count: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return l2_normalise(np.random.default_rng(seed).normal(size=(count, dim)))


def test_add_search_remove_round_trip(tmp_path: Path) -> None:
    index = VectorIndex.create(tmp_path / "s", SpaceHeader("s", "enc", "abc", 8))
    vectors = _vectors(50)
    ids = np.arange(1000, 1050)
    index.add(ids, vectors)
    scores, found = index.search(vectors[7], 3)
    assert found[0][0] == 1007 and scores[0][0] == pytest.approx(1.0, abs=1e-5)
    assert index.remove(np.array([1007, 99999])) == 1
    assert 1007 not in index.search(vectors[7], 50)[1][0]
    np.testing.assert_allclose(index.reconstruct(np.array([1008])), vectors[8:9], atol=1e-6)


def test_save_is_atomic_and_reloads(tmp_path: Path) -> None:
    index = VectorIndex.create(tmp_path / "s", SpaceHeader("s", "enc", "abc", 8))
    index.add(np.arange(10), _vectors(10))
    index.save()
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.startswith(".")]  # no temporary leftovers
    loaded = VectorIndex.load(tmp_path / "s")
    assert loaded is not None and loaded.ntotal == 10
    assert sorted(loaded.ids().tolist()) == list(range(10))
    assert (tmp_path / "s" / INDEX_FILE).is_file()


def test_another_model_is_refused(tmp_path: Path) -> None:
    index = VectorIndex.create(tmp_path / "s", SpaceHeader("clip", "open_clip:A", "aaaa", 8))
    index.check_compatible("open_clip:A", "aaaa")
    with pytest.raises(SpaceMismatchError, match="different model"):
        index.check_compatible("open_clip:B", "bbbb")


def test_wrong_dimension_is_refused(tmp_path: Path) -> None:
    index = VectorIndex.create(tmp_path / "s", SpaceHeader("s", "enc", "abc", 8))
    with pytest.raises(ValueError, match="8-d"):
        index.add(np.arange(2), _vectors(2, dim=4))


def test_saving_calibrates_scores_against_random_pairs(tmp_path: Path) -> None:
    index = VectorIndex.create(tmp_path / "s", SpaceHeader("s", "enc", "abc", 8))
    vectors = _vectors(500)
    index.add(np.arange(500), vectors)
    index.save()
    loaded = VectorIndex.load(tmp_path / "s")
    assert loaded is not None
    pairs = vectors[:250] @ vectors[250:].T
    assert loaded.header.score_mean == pytest.approx(float(pairs.mean()), abs=0.02)
    assert loaded.header.score_std == pytest.approx(float(pairs.std()), rel=0.1)
    assert loaded.calibrated(np.array([loaded.header.score_mean]))[0] == pytest.approx(0.0)


def test_an_index_saved_before_calibration_is_calibrated_on_load(tmp_path: Path) -> None:
    import json

    index = VectorIndex.create(tmp_path / "s", SpaceHeader("s", "enc", "abc", 8))
    index.add(np.arange(100), _vectors(100) * 0 + _vectors(1))  # identical vectors: every pair scores 1
    index.save()
    header = json.loads((tmp_path / "s" / "space.json").read_text())
    del header["score_mean"], header["score_std"]
    (tmp_path / "s" / "space.json").write_text(json.dumps(header))
    loaded = VectorIndex.load(tmp_path / "s")
    assert loaded is not None and loaded.header.score_mean == pytest.approx(1.0, abs=1e-4)
