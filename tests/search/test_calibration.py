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


# cross-modal agreement (measured at publication) and per-query nulls ------------------------------------------


def test_agreement_of_aligned_towers_is_high_and_of_random_ones_is_chance() -> None:
    from xmodal.store.agreement import agreement_weight, measure_agreement

    rng = np.random.default_rng(2)
    images = l2_normalise(rng.standard_normal((200, 32)))
    captions = l2_normalise(images + 0.2 * rng.standard_normal((200, 32)))  # each caption near its own image
    aligned = measure_agreement(captions, images)
    noise = measure_agreement(l2_normalise(rng.standard_normal((200, 32))), images)  # a random text tower
    assert aligned is not None and noise is not None
    assert aligned["agreement"] > 0.95 and abs(noise["agreement"] - 0.5) < 0.05
    assert agreement_weight({"pairs": {"text->image": aligned}}, "text->image") > 0.9
    assert agreement_weight({"pairs": {"text->image": noise}}, "text->image") == 0.0  # at chance: no say at all
    assert agreement_weight({}, "text->image") == 1.0  # unmeasured: full weight
    assert measure_agreement(captions[:3], images[:3]) is None  # too few pairs to tell


def test_a_query_is_judged_against_its_own_scores_on_random_items() -> None:
    from xmodal.search.calibration import NullSample, QueryCalibration

    rng = np.random.default_rng(3)
    # Two vectors per item for the first 30 items (an item scores as its best vector), one for the rest.
    vectors = l2_normalise(rng.standard_normal((130, 16)))
    starts = np.asarray(list(range(0, 60, 2)) + list(range(60, 130)), dtype=np.int64)
    sample = NullSample(vectors, starts, items=1000)
    query = l2_normalise(rng.standard_normal((1, 16)))[0]
    scores = sample.scores(query)
    assert len(scores) == 100
    assert scores[0] == pytest.approx(max(vectors[0] @ query, vectors[1] @ query))
    null = sample.null(query)
    assert null is not None
    assert null.mean == pytest.approx(scores.mean()) and null.std == pytest.approx(scores.std())
    calibration = QueryCalibration({None: null})
    assert calibration.z(null.mean + 2 * null.std, "image") == pytest.approx(2.0)  # no image null: the mixed one
    assert NullSample(vectors[:10], np.arange(10), items=10).null(query) is None  # too few items to tell
