"""A space that embeds text and images records, at publication, how well its captions find their own images."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from tests.conftest import make_settings, random_image, random_text
from xmodal.config import Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine
from xmodal.store.agreement import agreement_weight


def test_publication_measures_the_cross_modal_agreement_of_clip(
    tmp_path: Path, tiny_clip_dir: Path, encoder_pool: Callable[[str, Settings], Encoder]
) -> None:
    rng = random.Random(5)
    root = tmp_path / "corpus"
    root.mkdir()
    for number in range(30):
        random_image(rng).save(root / f"image_{number:03d}.png")
        (root / f"image_{number:03d}.txt").write_text(random_text(rng, 5))
    settings = make_settings(tmp_path / "home", tiny_clip_dir)
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        engine.index([root])
    calibration = json.loads((settings.spaces_dir / "clip" / "manifest.json").read_text())["calibration"]
    measured = calibration["pairs"]["text->image"]
    assert measured["pairs"] == 30
    # Random weights: captions find their images no better than chance, so fusion gives clip's text->image no say.
    assert abs(measured["agreement"] - 0.5) < 0.15
    assert agreement_weight(calibration, "text->image") == 0.0
    # The text space embeds only text: nothing cross-modal to measure.
    text = json.loads((settings.spaces_dir / "text" / "manifest.json").read_text())["calibration"]
    assert text.get("pairs", {}) == {}
