"""The default fused search is never worse than its best single space: real captions (Tux Paint stamps), the real
sentence model in `text`, a random-weight CLIP in `clip` (pure noise, as on a machine without the pretrained
weights), user-phrased paraphrase queries from the benchmark's query file. Measured through ``xmodal eval``'s
runner, so every source is the real search path."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import make_settings
from xmodal.config import Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine
from xmodal.evaluation.manifest import Manifest, ManifestItem, ManifestQuery
from xmodal.evaluation.runner import evaluate
from xmodal.indexer.decode import caption_from_sidecar

STAMPS = Path("/usr/share/tuxpaint/stamps")
QUERIES = Path(__file__).parents[2] / "benchmarks" / "data" / "tuxpaint_queries.tsv"
DISTRACTORS = 20  # captioned stamps no query asks for


def _manifest(kinds: set[str]) -> Manifest:
    with QUERIES.open(encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.DictReader(handle, delimiter="\t") if row["set"] in kinds]
    asked = {row["stamp"] for row in rows}
    others = sorted(
        str(sidecar.with_suffix("").relative_to(STAMPS))
        for sidecar in STAMPS.glob("animals/**/*.txt")
        if sidecar.with_suffix(".png").is_file()
    )
    stamps = sorted(asked) + [stamp for stamp in others if stamp not in asked][:DISTRACTORS]
    manifest = Manifest()
    for stamp in stamps:
        caption = caption_from_sidecar((STAMPS / f"{stamp}.txt").read_bytes(), 500)
        if caption and (STAMPS / f"{stamp}.png").is_file():
            manifest.items[stamp] = ManifestItem(stamp, file=STAMPS / f"{stamp}.png", caption=caption)
    for number, row in enumerate(rows):
        if row["stamp"] in manifest.items:
            manifest.queries.append(
                ManifestQuery(f"q{number}", frozenset({row["stamp"]}), row["query"], task=f"{row['set']}->image")
            )
    return manifest


@pytest.mark.skipif(not STAMPS.is_dir(), reason="apt install tuxpaint-stamps-default (.ci/run does)")
def test_fused_recall_is_at_least_the_best_single_space(
    tmp_path: Path, tiny_clip_dir: Path, encoder_pool: Callable[[str, Settings], Encoder]
) -> None:
    settings = make_settings(tmp_path / "home", tiny_clip_dir)  # `text`: the real all-MiniLM-L6-v2
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        report = evaluate(engine, _manifest({"paraphrase", "masked"}), tmp_path / "items")
    for task, sources in report.results.items():
        assert {"xmodal", "xmodal:clip", "xmodal:text", "bm25"} <= set(sources), task
        for k in (1, 5, 10):
            fused = float(sources["xmodal"][f"R@{k}"])  # type: ignore[arg-type]
            best = max(float(sources[s][f"R@{k}"]) for s in ("xmodal:clip", "xmodal:text", "bm25"))  # type: ignore[arg-type]
            assert fused >= best - 0.01, f"{task} R@{k}: fused {fused:.3f} < best single space {best:.3f}"
    # The sentence model does find most paraphrases: the test measures fusion, not a broken corpus.
    assert float(report.results["paraphrase->image"]["xmodal:text"]["R@10"]) > 0.5  # type: ignore[arg-type]
