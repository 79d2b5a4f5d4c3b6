"""Walking source folders: which files exist, their size and mtime, and which text files are sidecar captions."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".m4a", ".opus", ".aac"})
# Image formats seen in the wild that Pillow cannot decode; they are skipped, not failed.
UNSUPPORTED_IMAGE_EXTENSIONS = frozenset({".svgz", ".heic", ".heif", ".avif", ".psd"})
SVG_EXTENSIONS = frozenset({".svg"})  # rendered by the svg extra (xmodal.indexer.svg)


def image_extensions() -> frozenset[str]:
    """Extensions Pillow can open."""
    return frozenset(ext.lower() for ext in Image.registered_extensions())


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A regular file found under a root, with the sidecar caption next to it, if any."""

    path: Path
    root: Path
    size: int
    mtime_ns: int
    sidecar: Path | None = None
    sidecar_mtime_ns: int | None = None  # the newest of the caption and metadata sidecars
    metadata_sidecar: Path | None = None

    @property
    def extension(self) -> str:
        return self.path.suffix.lower()


ErrorCallback = Callable[[Path, str], None]


def normalise_roots(roots: Iterable[Path]) -> list[Path]:
    """Absolute, normalised roots (``..`` and ``.`` folded, links kept), each once, in the given order; a root
    that lies inside another folder root is that folder's and is dropped (``d/a.txt`` and ``d``: ``d``)."""
    unique = list(dict.fromkeys(Path(os.path.abspath(root)) for root in roots))
    folders = [root for root in unique if root.is_dir()]
    return [root for root in unique if not any(root != folder and root.is_relative_to(folder) for folder in folders)]


def walk(
    roots: Iterable[Path],
    *,
    text_extensions: Iterable[str],
    include_hidden: bool = False,
    on_error: ErrorCallback | None = None,
) -> Iterator[SourceFile]:
    """Every regular file under ``roots``, in a stable order.

    Symbolic links to folders are followed, but a folder is entered once only, so link loops end. A text file
    named like a media file beside it (``photo.txt`` next to ``photo.jpg``) is not yielded: it becomes that
    file's ``sidecar``; likewise ``photo.json`` becomes its ``metadata_sidecar`` (clip-retrieval's convention).
    Folders or files that cannot be read are reported to ``on_error`` and skipped.
    """
    report = on_error or (lambda _path, _reason: None)
    text_exts = frozenset(text_extensions)
    media_exts = image_extensions() | UNSUPPORTED_IMAGE_EXTENSIONS | SVG_EXTENSIONS | AUDIO_EXTENSIONS
    seen_dirs: set[tuple[int, int]] = set()
    for root in roots:
        root = root.absolute()
        if root.is_file():
            info = _stat(root, report)
            if info is not None:
                yield SourceFile(root, root.parent, info.st_size, info.st_mtime_ns)
            continue
        yield from _walk_dir(root, root, text_exts, media_exts, include_hidden, seen_dirs, report)


def _stat(path: Path, report: ErrorCallback) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError as exc:
        report(path, f"cannot read file: {exc.strerror or exc}")
        return None


def _walk_dir(
    directory: Path,
    root: Path,
    text_exts: frozenset[str],
    media_exts: frozenset[str],
    include_hidden: bool,
    seen_dirs: set[tuple[int, int]],
    report: ErrorCallback,
) -> Iterator[SourceFile]:
    try:
        info = directory.stat()
        if (info.st_dev, info.st_ino) in seen_dirs:
            return
        seen_dirs.add((info.st_dev, info.st_ino))
        with os.scandir(directory) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError as exc:
        report(directory, f"cannot read folder: {exc.strerror or exc}")
        return

    files: dict[str, os.stat_result] = {}
    subdirs: list[Path] = []
    for entry in entries:
        if not include_hidden and entry.name.startswith("."):
            continue
        try:
            entry_info = entry.stat()  # follows links: a dangling one fails here
        except OSError as exc:
            report(Path(entry.path), f"cannot read file: {exc.strerror or exc}")
            continue
        if stat.S_ISDIR(entry_info.st_mode):
            subdirs.append(Path(entry.path))
        elif stat.S_ISREG(entry_info.st_mode):
            files[entry.name] = entry_info

    media_stems = {os.path.splitext(name)[0] for name in files if os.path.splitext(name)[1].lower() in media_exts}
    for name, file_info in files.items():
        stem, ext = os.path.splitext(name)
        if ext.lower() in text_exts and stem in media_stems:
            continue  # a sidecar: it travels with its media file
        if ext.lower() == ".json" and any(other != name and other.startswith(f"{stem}.") for other in files):
            continue  # a metadata sidecar
        sidecar, sidecar_mtime = _find_sidecar(stem, ext.lower(), files, text_exts, media_exts)
        metadata = files.get(f"{stem}.json")
        if metadata is not None:
            sidecar_mtime = max(sidecar_mtime or 0, metadata.st_mtime_ns)
        yield SourceFile(
            path=directory / name,
            root=root,
            size=file_info.st_size,
            mtime_ns=file_info.st_mtime_ns,
            sidecar=directory / sidecar if sidecar else None,
            sidecar_mtime_ns=sidecar_mtime,
            metadata_sidecar=directory / f"{stem}.json" if metadata is not None else None,
        )
    for subdir in subdirs:
        yield from _walk_dir(subdir, root, text_exts, media_exts, include_hidden, seen_dirs, report)


def _find_sidecar(
    stem: str,
    ext: str,
    files: dict[str, os.stat_result],
    text_exts: frozenset[str],
    media_exts: frozenset[str],
) -> tuple[str | None, int | None]:
    if ext not in media_exts:
        return None, None
    for text_ext in sorted(text_exts):
        for candidate in (stem + text_ext, stem + text_ext.upper()):
            if candidate in files:
                return candidate, files[candidate].st_mtime_ns
    return None, None
