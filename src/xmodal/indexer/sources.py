"""Walking source folders: which files exist, their size and mtime, and which text files are sidecar captions.

Buckets (:mod:`xmodal.indexer.remote`) and WebDataset shards (:mod:`xmodal.indexer.webdataset`) yield the same
:class:`SourceFile`, with a :class:`Location` in place of a local path.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from PIL import Image

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".m4a", ".opus", ".aac"})
# Image formats seen in the wild that Pillow cannot decode; they are skipped, not failed.
UNSUPPORTED_IMAGE_EXTENSIONS = frozenset({".svgz", ".heic", ".heif", ".avif", ".psd"})
SVG_EXTENSIONS = frozenset({".svg"})  # rendered by the svg extra (xmodal.indexer.svg)


def image_extensions() -> frozenset[str]:
    """Extensions Pillow can open."""
    return frozenset(ext.lower() for ext in Image.registered_extensions())


class Location(Protocol):
    """What the reader needs of a file that is not on the local disk (a bucket object, a shard's sample).
    ``str()`` of it is the address the catalog keeps."""

    @property
    def name(self) -> str: ...
    @property
    def suffix(self) -> str: ...
    def open(self, mode: str = "rb") -> IO[bytes]: ...
    def read_bytes(self) -> bytes: ...
    def read_at_most(self, limit: int) -> bytes: ...
    def as_uri(self) -> str: ...


def read_source(path: Path | Location, limit: int) -> bytes:
    """A file's bytes; a remote one is streamed and stopped past ``limit`` (its listed size was checked already)."""
    return path.read_bytes() if isinstance(path, Path) else path.read_at_most(limit)


def media_extensions() -> frozenset[str]:
    """Extensions of the images and audio files a caption or metadata sidecar can belong to."""
    return image_extensions() | UNSUPPORTED_IMAGE_EXTENSIONS | SVG_EXTENSIONS | AUDIO_EXTENSIONS


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A regular file found under a root, with the sidecar caption next to it, if any."""

    path: Path | Location
    root: Path | Location
    size: int
    mtime_ns: int
    sidecar: Path | Location | None = None
    sidecar_mtime_ns: int | None = None  # the newest of the caption and metadata sidecars
    metadata_sidecar: Path | Location | None = None
    version: str | None = None  # the store's identity of the object and its sidecars (None for local files)

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
    media_exts = media_extensions()
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

    for name, sidecar, metadata in pair_sidecars(files, text_exts=text_exts, media_exts=media_exts):
        times = [files[other].st_mtime_ns for other in (sidecar, metadata) if other is not None]
        yield SourceFile(
            path=directory / name,
            root=root,
            size=files[name].st_size,
            mtime_ns=files[name].st_mtime_ns,
            sidecar=directory / sidecar if sidecar else None,
            sidecar_mtime_ns=max(times) if times else None,
            metadata_sidecar=directory / metadata if metadata else None,
        )
    for subdir in subdirs:
        yield from _walk_dir(subdir, root, text_exts, media_exts, include_hidden, seen_dirs, report)


def pair_sidecars(
    names: Collection[str], *, text_exts: frozenset[str], media_exts: frozenset[str]
) -> Iterator[tuple[str, str | None, str | None]]:
    """``(file, caption sidecar, metadata sidecar)`` for each name of one folder that is not itself a sidecar.

    A text file named like a media file beside it (``photo.txt`` next to ``photo.jpg``) is that file's caption;
    ``photo.json`` is its metadata (clip-retrieval's convention).
    """
    media_stems = {os.path.splitext(name)[0] for name in names if os.path.splitext(name)[1].lower() in media_exts}
    for name in names:
        stem, ext = os.path.splitext(name)
        if ext.lower() in text_exts and stem in media_stems:
            continue  # a sidecar: it travels with its media file
        if ext.lower() == ".json" and any(other != name and other.startswith(f"{stem}.") for other in names):
            continue  # a metadata sidecar
        metadata = f"{stem}.json" if f"{stem}.json" in names else None
        yield name, _find_sidecar(stem, ext.lower(), names, text_exts, media_exts), metadata


def _find_sidecar(
    stem: str, ext: str, names: Collection[str], text_exts: frozenset[str], media_exts: frozenset[str]
) -> str | None:
    if ext not in media_exts:
        return None
    for text_ext in sorted(text_exts):
        for candidate in (stem + text_ext, stem + text_ext.upper()):
            if candidate in names:
                return candidate
    return None
