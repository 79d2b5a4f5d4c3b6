"""`xmodal eval --fit-fusion`: weights fitted on a labelled manifest, kept in the home, read by later searches."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import make_settings
from tests.evaluation.test_eval import _dataset
from xmodal.config import Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine
from xmodal.errors import ConfigError
from xmodal.evaluation.fit import fit_fusion
from xmodal.evaluation.manifest import Manifest
from xmodal.search.fusion import FITTED_FILE, Source, combine, load_fitted_weights


def test_fitted_weights_are_kept_in_the_home_and_read_by_the_next_engine(
    tmp_path: Path,
    tiny_clip_dir: Path,
    encoder_pool: Callable[[str, Settings], Encoder],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("xmodal.evaluation.fit.GRID", (0.0, 1.0))  # a short search: the test is about the mechanics
    monkeypatch.setattr("xmodal.evaluation.fit.ROUNDS", 1)
    manifest = Manifest.load(_dataset(tmp_path / "data"))
    settings = make_settings(tmp_path / "home", tiny_clip_dir, speech_model="")
    assert load_fitted_weights(settings.home) == {}  # off until fitted: every space counts 1
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        report = fit_fusion(engine, manifest, tmp_path / "items", source="manifest.jsonl")
        assert set(report.before) == {"text", "image"}
        assert all(report.after[kind] >= report.before[kind] for kind in report.before)
        assert engine.searcher.fusion_weights == report.weights  # in force at once
    stored = json.loads((settings.home / FITTED_FILE).read_text())
    assert stored["weights"] == report.weights and stored["manifest"] == "manifest.jsonl"
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        assert engine.searcher.fusion_weights == report.weights


def test_a_space_weighted_zero_adds_nothing_and_a_broken_file_says_what_to_do(tmp_path: Path) -> None:
    clip, text = Source("clip", 0, "q", 1.0), Source("text", 0, "q", 1.0)
    parts = combine({clip: 4.0, text: 3.0}, {"clip": 0.0})
    assert parts[clip] == 0.0 and parts[text] == pytest.approx(3.0)
    (tmp_path / FITTED_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="fit-fusion"):
        load_fitted_weights(tmp_path)
