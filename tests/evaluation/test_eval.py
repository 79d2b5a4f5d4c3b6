"""`xmodal eval` end to end: real MiniLM text space, tiny random CLIP, BM25; engine vs brute force; outputs."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import make_settings, random_image
from xmodal.cli import app
from xmodal.config import Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine
from xmodal.evaluation.captioning import CAPTION_METRICS, captioning_unavailable
from xmodal.evaluation.manifest import Manifest, ManifestItem, ManifestQuery, write_manifest
from xmodal.evaluation.report import markdown, write_all
from xmodal.evaluation.runner import evaluate

DOCUMENTS = {
    "doc-cat": "The cat sleeps all afternoon on the warm windowsill.",
    "doc-rain": "Heavy rain flooded the streets of the old town overnight.",
    "doc-bread": "She bakes fresh sourdough bread every Sunday morning.",
    "doc-train": "The night train to the capital was delayed by two hours.",
    "doc-goal": "The striker scored the winning goal in the final minute.",
    "doc-piano": "He practises scales on the piano before breakfast.",
}
PARAPHRASES = {
    "doc-cat": "a kitten napping in the sun by a window",
    "doc-rain": "storm water covering city roads",
    "doc-bread": "baking a loaf at the weekend",
    "doc-train": "a late railway journey",
    "doc-goal": "a football match decided at the very end",
    "doc-piano": "keyboard practice in the morning",
}


def _dataset(folder: Path) -> Path:
    rng = random.Random(3)
    items = [ManifestItem(key, text=text) for key, text in DOCUMENTS.items()]
    queries = [ManifestQuery(f"q-{key}", frozenset({key}), text=text) for key, text in PARAPHRASES.items()]
    folder.mkdir(parents=True)
    for number in range(8):
        path = folder / f"picture{number}.png"
        random_image(rng).save(path)
        items.append(ManifestItem(f"img-{number}", file=path))
        queries.append(ManifestQuery(f"q-img-{number}", frozenset({f"img-{number}"}), file=path, task="same image"))
        queries.append(ManifestQuery(f"q-img-doc-{number}", frozenset({"doc-cat"}), file=path))
    manifest = folder / "manifest.jsonl"
    write_manifest(manifest, items, queries)
    return manifest


def test_every_direction_and_source_is_measured(
    tmp_path: Path, tiny_clip_dir: Path, tiny_clap_dir: Path, encoder_pool: Callable[[str, Settings], Encoder]
) -> None:
    manifest = Manifest.load(_dataset(tmp_path / "data"))
    settings = make_settings(tmp_path / "home", tiny_clip_dir, tiny_clap_dir, speech_model="")
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        report = evaluate(engine, manifest, tmp_path / "staged")
    assert report.indexed == 14 and not report.failed
    assert set(report.results) == {"text->text", "same image", "image->text"}
    text = report.results["text->text"]
    assert {"xmodal", "xmodal:text", "exact:text", "xmodal:clip", "exact:clip", "bm25"} <= set(text)
    assert text["exact:text"]["R@1"] >= 5 / 6  # the real MiniLM finds paraphrases
    assert text["xmodal:text"] == text["exact:text"]  # a flat index loses nothing to brute force
    assert text["bm25"]["R@10"] < text["exact:text"]["R@10"]  # paraphrases share few words
    assert report.results["same image"]["exact:clip"]["R@1"] == 1.0  # an image finds itself
    if captioning_unavailable() is None:  # image -> text also scored as captioning (the first text retrieved)
        lookup = report.results["image->text"]["xmodal"]
        assert all(float(lookup[m]) >= 0.0 for m in CAPTION_METRICS) and "CIDEr" in markdown(report)
    else:
        assert any("image->text: BLEU-4" in source for source in report.unavailable)
    for sources in report.results.values():
        for summary in sources.values():
            assert all(0.0 <= float(summary[m]) <= 1.0 for m in ("R@1", "R@5", "R@10", "mAP@10", "nDCG@10"))
            assert summary["R@1"] <= summary["R@5"] <= summary["R@10"]
    written = write_all(report, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "results.json").read_text())["results"]["text->text"]["bm25"]
    assert "### text->text (6 queries)" in markdown(report)
    for png in (p for p in written if p.suffix == ".png"):
        assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 5000


def test_the_cli_writes_results_and_says_what_it_wrote(
    tmp_path: Path, tiny_clip_dir: Path, tiny_clap_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = _dataset(tmp_path / "data")
    monkeypatch.chdir(tmp_path)  # a relative --out, as people type it
    monkeypatch.setenv("XMODAL_CLIP_ENCODER", f"open_clip:local-dir:{tiny_clip_dir}")
    monkeypatch.setenv("XMODAL_CLAP_ENCODER", f"clap:{tiny_clap_dir}")
    monkeypatch.setenv("XMODAL_SPEECH_MODEL", "")
    monkeypatch.setenv("XMODAL_DEVICE", "cpu")
    result = CliRunner().invoke(app, ["eval", str(manifest), "--out", "out"])
    assert result.exit_code == 0, result.output
    assert "text->text" in result.output and "wrote" in result.output
    measured = json.loads((tmp_path / "out" / "results.json").read_text())["results"]["text->text"]
    assert measured["exact:text"]["R@1"] >= 5 / 6  # items matched back to their ids from a relative folder
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"results.json", "results.md", "recall_at_k.png", "home"}


def test_eval_answers_an_audio_query(
    tmp_path: Path, tiny_clip_dir: Path, tiny_clap_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's `xmodal eval` on a manifest holding an audio query: decoded once, then asked of every space
    (it crashed with "object of type 'AudioClip' has no len()")."""
    from tests.conftest import write_audio_corpus

    clips = write_audio_corpus(tmp_path / "clips", clips=3, texts=0)
    items = [
        ManifestItem(f"clip-{n}", file=clips / name) for n, name in enumerate(sorted(p.name for p in clips.iterdir()))
    ]
    items.append(ManifestItem("doc", text="a bell ringing"))
    queries = [
        ManifestQuery("q-audio", frozenset({"clip-0"}), file=items[0].file, task="same clip"),
        ManifestQuery("q-text", frozenset({"clip-1"}), text="a bell ringing"),
    ]
    manifest = tmp_path / "tiny.jsonl"
    write_manifest(manifest, items, queries)
    monkeypatch.setenv("XMODAL_CLIP_ENCODER", f"open_clip:local-dir:{tiny_clip_dir}")
    monkeypatch.setenv("XMODAL_CLAP_ENCODER", f"clap:{tiny_clap_dir}")
    monkeypatch.setenv("XMODAL_SPEECH_MODEL", "")
    monkeypatch.setenv("XMODAL_DEVICE", "cpu")
    result = CliRunner().invoke(app, ["eval", str(manifest), "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    measured = json.loads((tmp_path / "eval" / "results.json").read_text())["results"]
    assert measured["same clip"]["exact:clap"]["R@1"] == 1.0  # a clip finds itself
