"""Calibration per (query modality, item modality) pair: cross-modal nulls are measured, not borrowed."""

from __future__ import annotations

import numpy as np
import pytest

from xmodal.encoders.base import l2_normalise
from xmodal.search.calibration import calibrate_pairs, calibrated


def _clusters(rng: np.random.Generator, centre: np.ndarray, count: int, spread: float) -> np.ndarray:
    return l2_normalise(centre + spread * rng.standard_normal((count, len(centre))))


def test_text_to_image_null_is_measured_from_texts_against_images() -> None:
    rng = np.random.default_rng(0)
    # Like CLIP: images crowd one cone, texts another; text-image pairs score below either.
    image_centre, text_centre = np.zeros(32), np.zeros(32)
    image_centre[0], text_centre[1] = 1.0, 1.0
    images, texts = _clusters(rng, image_centre, 300, 0.3), _clusters(rng, text_centre, 300, 0.3)
    vectors = np.vstack([images, texts]).astype(np.float32)
    table = calibrate_pairs(vectors, ["image"] * 300 + ["text"] * 300)
    assert set(table) == {"text->image", "text->text", "image->image", "image->text"}
    assert table["text->image"][0] < table["image->image"][0] - 0.2
    assert table["text->image"][0] == pytest.approx(float((texts @ images.T).mean()), abs=0.02)
    # A good text->image match is far above its own null, whatever the image-image null says.
    score = float(table["text->image"][0] + 4 * table["text->image"][1])
    z = calibrated(score, table, "text", "image", default=table["image->image"])
    assert float(z) == pytest.approx(4.0)


def test_prompts_stand_in_for_texts_a_space_does_not_hold() -> None:
    rng = np.random.default_rng(1)
    images = _clusters(rng, np.eye(16)[0], 200, 0.2).astype(np.float32)
    prompts = _clusters(rng, np.eye(16)[1], 20, 0.2).astype(np.float32)
    table = calibrate_pairs(images, ["image"] * 200, prompts={"text": prompts})
    assert set(table) == {"image->image", "text->image"}
    assert table["text->image"][0] < table["image->image"][0]


def test_a_missing_pair_falls_back_to_the_default_and_lengths_must_agree() -> None:
    assert float(calibrated(0.5, {}, "audio", "image", default=(0.1, 0.2))) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="modalities"):
        calibrate_pairs(np.zeros((3, 4), np.float32), ["image"])
