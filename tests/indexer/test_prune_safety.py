"""Prune as an unlucky operator meets it: a disk that went missing behind a link, an emptied root, a big share of
a root gone at once, folders that differ only in case, and roots that overlap."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import write_corpus
from xmodal.cli import app
from xmodal.config import Settings
from xmodal.engine import Engine


def _cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"HOME": settings.home, "CLIP_ENCODER": settings.clip_encoder,
                       "CLAP_ENCODER": settings.clap_encoder, "DEVICE": "cpu"}.items():  # fmt: skip
        monkeypatch.setenv(f"XMODAL_{key}", str(value))
    if settings.database_url:
        monkeypatch.setenv("XMODAL_DATABASE_URL", settings.database_url)


def test_a_missing_disk_behind_a_link_is_not_pruned(engine: Engine, tmp_path: Path) -> None:
    library = write_corpus(tmp_path / "library", images=1, texts=2)
    disk = write_corpus(tmp_path / "external-disk", images=0, texts=3, seed=3)
    os.symlink(disk, library / "disk")  # an external disk mounted inside the indexed folder
    engine.index([library])
    shutil.rmtree(disk)  # the disk is gone: the link dangles

    report = engine.index([library], prune=True, force_prune=True)  # not even --force-prune deletes them
    assert report.pruned == 0 and not report.ok
    assert [root for root, _ in report.prunes_skipped] == [str(library)]
    assert "walk met errors" in report.prunes_skipped[0][1]
    assert any(path.endswith("/disk") for path, _ in report.failures)
    assert engine.stats().items_by_status == {"ok": 6}  # the disk's three items are all still there


def test_an_emptied_root_is_not_pruned(engine: Engine, tmp_path: Path) -> None:
    root = write_corpus(tmp_path / "mount", images=2, texts=2)
    engine.index([root])
    for child in root.iterdir():  # an unmounted mount point: the folder is there, empty
        child.unlink()
    report = engine.index([root], prune=True, force_prune=True)
    assert report.pruned == 0 and not report.ok
    assert [skipped_root for skipped_root, _ in report.prunes_skipped] == [str(root)]
    assert "no file was found" in report.prunes_skipped[0][1]
    assert engine.stats().items_by_status == {"ok": 4}


def test_pruning_more_than_the_allowed_share_needs_force(engine: Engine, tmp_path: Path) -> None:
    root = write_corpus(tmp_path / "corpus", images=0, texts=8)
    engine.index([root])
    for number in range(3):  # 3 of 8 > 25%
        (root / f"doc_{number:03d}.txt").unlink()
    held = engine.index([root], prune=True)
    assert held.pruned == 0 and not held.ok
    assert "3 of its 8 items are gone" in held.prunes_skipped[0][1] and "--force-prune" in held.prunes_skipped[0][1]
    assert engine.stats().items_by_status == {"ok": 8}

    forced = engine.index([root], prune=True, force_prune=True)
    assert forced.pruned == 3 and forced.ok
    assert engine.stats().items_by_status == {"ok": 5}


def test_cli_force_prune_and_exit_code(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_corpus(tmp_path / "corpus", images=0, texts=4)
    _cli_env(settings, monkeypatch)
    assert CliRunner().invoke(app, ["index", str(root), "-q"]).exit_code == 0
    (root / "doc_000.txt").unlink()
    (root / "doc_001.txt").unlink()
    held = CliRunner().invoke(app, ["index", str(root), "--prune", "-q"])
    assert held.exit_code == 1
    assert "not pruned" in held.output and "--force-prune" in held.output
    forced = CliRunner().invoke(app, ["index", str(root), "--prune", "--force-prune", "--json"])
    report = json.loads(forced.stdout)
    assert forced.exit_code == 0 and report["pruned"] == 2 and report["prunes_skipped"] == []


def test_folders_differing_in_case_are_kept_apart(engine: Engine, tmp_path: Path) -> None:
    upper = write_corpus(tmp_path / "x" / "Photos", images=0, texts=3)
    lower = write_corpus(tmp_path / "x" / "photos", images=0, texts=2, seed=1)
    sibling = write_corpus(tmp_path / "x" / "Photos-old", images=0, texts=1, seed=2)
    engine.index([upper, lower, sibling])

    report = engine.index([upper], prune=True)
    assert report.pruned == 0 and report.ok
    assert engine.stats().items_by_status == {"ok": 6}
    found = engine.search("river", k=50, space="lexical", where=[f"folder={upper}"])
    found += engine.search("x", k=50, space="text", where=[f"folder={upper}/"])
    assert found and {Path(r.path).parent for r in found} == {upper}


@pytest.mark.parametrize("order", ["file-first", "folder-first"])
def test_overlapping_roots_index_each_file_once(engine: Engine, tmp_path: Path, order: str) -> None:
    root = write_corpus(tmp_path / "d", images=0, texts=3)
    roots = (
        [root / "doc_000.txt", root] if order == "file-first" else [root, tmp_path / "d" / ".." / "d" / "doc_000.txt"]
    )
    report = engine.index(roots)
    assert (report.scanned, report.indexed, report.failed) == (3, 3, 0)
    again = engine.index([*roots, root], prune=True)
    assert (again.unchanged, again.pruned, again.ok) == (3, 0, True)
