"""Image -> text lookup scored as captioning with pycocoevalcap's BLEU-4, METEOR and CIDEr."""

from __future__ import annotations

import pytest

from xmodal.evaluation import captioning
from xmodal.evaluation.captioning import CAPTION_METRICS, CaptionScorer, captioning_unavailable

needs_scorer = pytest.mark.skipif(
    captioning_unavailable() is not None, reason=f"{captioning_unavailable()} (.ci/run installs both)"
)

REFERENCES = {
    "bike": ["A red bicycle leaning against a brick wall.", "A bike parked by a wall."],
    "lion": ["A lion resting in the grass.", "A big cat lying on the savanna."],
}


@needs_scorer
def test_the_right_caption_scores_high_and_a_wrong_one_low() -> None:
    with CaptionScorer() as scorer:
        right = scorer.score({"bike": REFERENCES["bike"][0], "lion": REFERENCES["lion"][0]}, REFERENCES)
        wrong = scorer.score({"bike": REFERENCES["lion"][0], "lion": REFERENCES["bike"][0]}, REFERENCES)
        assert scorer.score({"bike": ""}, REFERENCES) == {}  # nothing retrieved: nothing to score
    assert set(right) == set(CAPTION_METRICS)
    assert right["BLEU-4"] > 0.9 and right["METEOR"] > 0.9 and right["CIDEr"] > 1.0
    assert wrong["BLEU-4"] < 0.1 and wrong["METEOR"] < 0.3 and wrong["CIDEr"] < 0.5


def test_without_java_the_metrics_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(captioning.shutil, "which", lambda name: None)
    reason = captioning_unavailable()
    assert reason is not None and ("default-jre-headless" in reason or "xmodal[caption]" in reason)
    with pytest.raises(RuntimeError, match="install"):
        CaptionScorer()
