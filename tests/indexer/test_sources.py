"""Walking folders: symlink loops end, sidecars pair with their media, hidden files stay out."""

from __future__ import annotations

import os
from pathlib import Path

from xmodal.indexer.sources import walk


def _names(root: Path, **options: object) -> dict[str, str | None]:
    found = walk([root], text_extensions=(".txt", ".md"), **options)  # type: ignore[arg-type]
    return {str(f.path.relative_to(root)): f.sidecar.name if f.sidecar else None for f in found}


def test_symlink_loops_end_and_each_folder_is_walked_once(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.txt").write_text("x")
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")
    os.symlink(tmp_path / "a" / "b", tmp_path / "alias")
    assert _names(tmp_path) == {"a/b/x.txt": None}


def test_sidecar_captions_pair_with_media(tmp_path: Path) -> None:
    for name in ("photo.jpg", "photo.txt", "song.ogg", "song.txt", "notes.txt", "drawing.svg", "drawing.md"):
        (tmp_path / name).write_bytes(b"x")
    assert _names(tmp_path) == {
        "photo.jpg": "photo.txt",
        "song.ogg": "song.txt",
        "drawing.svg": "drawing.md",
        "notes.txt": None,
    }


def test_hidden_files_are_skipped_unless_asked(tmp_path: Path) -> None:
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "a.txt").write_text("a")
    (tmp_path / ".b.txt").write_text("b")
    (tmp_path / "c.txt").write_text("c")
    assert set(_names(tmp_path)) == {"c.txt"}
    assert set(_names(tmp_path, include_hidden=True)) == {".cache/a.txt", ".b.txt", "c.txt"}


def test_unreadable_entries_are_reported_not_raised(tmp_path: Path) -> None:
    os.symlink(tmp_path / "missing", tmp_path / "broken.png")
    (tmp_path / "ok.txt").write_text("ok")
    errors: list[tuple[Path, str]] = []
    found = list(walk([tmp_path], text_extensions=(".txt",), on_error=lambda p, r: errors.append((p, r))))
    assert [f.path.name for f in found] == ["ok.txt"]
    assert errors and errors[0][0].name == "broken.png"
