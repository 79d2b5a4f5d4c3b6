"""Cron ergonomics: no model loads for an unchanged tree, one indexer per home, prune, max-items, reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import write_corpus
from xmodal.cli import EXIT_LOCKED, main
from xmodal.config import Settings
from xmodal.engine import Engine
from xmodal.errors import IndexLockedError
from xmodal.indexer.lock import index_lock


def test_an_unchanged_tree_loads_no_model(settings: Settings, tmp_path: Path) -> None:
    root = write_corpus(tmp_path / "corpus", images=3, texts=3)
    with Engine.open(settings=settings) as engine:
        engine.index([root])
    with Engine.open(settings=settings) as fresh:  # new encoder objects, nothing loaded yet
        report = fresh.index([root])
        assert report.unchanged == 6 and report.indexed == report.updated == 0
        assert not any(space.encoder.loaded for space in fresh.spaces)


def test_a_second_indexer_is_refused_at_once(engine: Engine, tmp_path: Path) -> None:
    root = write_corpus(tmp_path / "corpus", images=1, texts=1)
    with index_lock(engine.settings.home, engine.catalog), pytest.raises(IndexLockedError, match=r"pid \d+"):
        engine.index([root])
    assert engine.index([root]).indexed == 2  # released afterwards


def test_locked_home_exits_75(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    root = write_corpus(tmp_path / "corpus", images=1, texts=0)
    monkeypatch.setenv("XMODAL_HOME", str(settings.home))
    monkeypatch.setattr("sys.argv", ["xmodal", "index", str(root)])
    with (
        Engine.open(settings=settings) as engine,
        index_lock(engine.settings.home, engine.catalog),
        pytest.raises(SystemExit) as exited,
    ):
        main()
    assert exited.value.code == EXIT_LOCKED
    assert "Another indexer is running" in capsys.readouterr().err


def test_prune_forgets_items_whose_files_are_gone(engine: Engine, tmp_path: Path) -> None:
    root = write_corpus(tmp_path / "corpus", images=3, texts=3)
    other = write_corpus(tmp_path / "other", images=1, texts=0, seed=5)
    engine.index([root, other])
    sizes = {space.name: space.size for space in engine.spaces}
    (root / "doc_001.txt").unlink()
    (root / "image_001.png").unlink()  # one without a caption file, which would become a text item

    kept = engine.index([root])
    assert kept.pruned == 0 and engine.stats().items_by_status == {"ok": 7}

    pruned = engine.index([root], prune=True, force_prune=True)  # 2 of 6 is past the default share
    assert pruned.pruned == 2
    assert engine.stats().items_by_status == {"ok": 5}  # the other root's item stays
    assert all(engine.spaces[name].size < size for name, size in sizes.items() if name != "clap")
    assert engine.catalog.vector_ids("text") == sorted(engine.spaces["text"].stored_index().ids().tolist())
    paths = {Path(r.path).name for r in engine.search("river", k=50)}
    assert "doc_001.txt" not in paths and "image_001.png" not in paths


def test_max_items_defers_the_rest_to_the_next_run(engine: Engine, tmp_path: Path) -> None:
    root = write_corpus(tmp_path / "corpus", images=3, texts=3)
    first = engine.index([root], max_items=4)
    assert (first.indexed, first.deferred) == (4, 2)
    second = engine.index([root], max_items=4)
    assert (second.indexed, second.deferred, second.unchanged) == (2, 0, 4)


def test_cli_report_file(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_corpus(tmp_path / "corpus", images=2, texts=2)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    for key, value in {"HOME": settings.home, "CLIP_ENCODER": settings.clip_encoder,
                       "CLAP_ENCODER": settings.clap_encoder, "DEVICE": "cpu"}.items():  # fmt: skip
        monkeypatch.setenv(f"XMODAL_{key}", str(value))
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(
        __import__("xmodal.cli").cli.app, ["index", str(root), "-q", "--report", str(report_path)]
    )
    assert result.exit_code == 1
    report = json.loads(report_path.read_text())
    assert report["indexed"] == 4 and report["failed"] == 1
    assert report["failures"][0][0].endswith("broken.png") and report["timings"]["total_s"] > 0


def test_moved_and_copied_files_keep_their_vectors(engine: Engine, tmp_path: Path) -> None:
    import shutil

    root = write_corpus(tmp_path / "corpus", images=4, texts=4)
    engine.index([root])
    before = engine.search(image=root / "image_001.png", k=1, space="clip")[0]
    shutil.copy(root / "image_001.png", root / "copy.png")
    (root / "doc_002.txt").rename(root / "moved.txt")

    report = engine.index([root], prune=True)
    assert (report.indexed, report.reused, report.pruned) == (2, 2, 1)
    encoder = engine.spaces["clip"].encoder
    assert report.vectors_added == len(engine.catalog.embeddings_of(before.item_id, "clip")) + sum(
        len(engine.catalog.embeddings_of(r.item_id, s)) for s in ("clip", "text", "clap")
        for r in engine.search("x", k=50, space="text") if r.path.endswith("moved.txt")
    )  # fmt: skip
    copy = next(
        r for r in engine.search(image=root / "image_001.png", k=2, space="clip") if r.path.endswith("copy.png")
    )
    assert copy.space_scores["clip"] == pytest.approx(before.space_scores["clip"])  # the very same vector
    assert encoder.loaded  # (the query encoded; the copy itself was not re-encoded: see vectors_added)


def test_a_running_server_picks_up_a_new_index_without_reopening(
    settings: Settings, tmp_path: Path, encoder_pool
) -> None:  # type: ignore[no-untyped-def]
    root = write_corpus(tmp_path / "corpus", images=2, texts=2)
    with Engine.open(settings=settings, build_encoder=encoder_pool) as server:
        assert server.search("river", k=10) == []  # nothing indexed yet
        with Engine.open(settings=settings, build_encoder=encoder_pool) as nightly:
            nightly.index([root])
        assert len(server.search("river", k=10, space="text")) == 3  # two texts and one captioned image
        (root / "late.txt").write_text("a lighthouse on the harbor")
        with Engine.open(settings=settings, build_encoder=encoder_pool) as nightly:
            nightly.index([root])
        server.reload()  # a newer publication is otherwise swapped in by a background load, not inside a query
        assert "late.txt" in {Path(r.path).name for r in server.search("lighthouse", k=10, space="text")}
