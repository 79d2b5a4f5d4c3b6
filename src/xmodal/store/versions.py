"""A space's versions: which model's vectors are current, which are being built, which came before.

A space that has never changed model is version 1 and has no pointer file: its home is ``spaces/<space>/`` as
it always was. ``xmodal spaces switch`` adds a version with its own home and its own catalog rows::

    spaces/clip/                  version 1 (manifest.json, segments/, ...; see :mod:`xmodal.store.manifest`)
    spaces/clip/versions.json     the pointer: every version's model, and which is current, shadow, previous
    spaces/clip/v2/               version 2's home, the same layout

Each version keeps its catalog embedding rows under its own key (``clip`` for version 1, ``clip@v2`` for
version 2), so the rows of a shadow being built never mix with the current one's. The pointer is replaced by one
atomic rename by the holder of the home's writer lock; a reader resolves it when it refreshes, and sees either
the old pointer or the new one, each naming versions whose files are complete.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from xmodal.store.manifest import HISTORY_DIR, MANIFEST_FILE, SEGMENTS_DIR, TOMBSTONES_DIR
from xmodal.store.segments import fsync_dir, fsync_file

POINTER_FILE = "versions.json"
FORMAT = 1
# What version 1 keeps in the space's own folder (removed when it is forgotten; the other versions stay).
_VERSION_ONE_ENTRIES = (MANIFEST_FILE, HISTORY_DIR, SEGMENTS_DIR, TOMBSTONES_DIR, ".migrate.lock")


def catalog_key(space: str, number: int) -> str:
    """The catalog's name for the rows of version ``number`` of ``space`` (``clip``, ``clip@v2``, ...)."""
    return space if number == 1 else f"{space}@v{number}"


def version_directory(space_dir: Path, number: int) -> Path:
    """Where version ``number`` of the space in ``space_dir`` keeps its segments and manifest."""
    return space_dir if number == 1 else space_dir / f"v{number}"


@dataclass(frozen=True, slots=True)
class SpaceVersion:
    """One version of a space: the model that made its vectors."""

    number: int
    encoder_spec: str
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def key(self, space: str) -> str:
        return catalog_key(space, self.number)


@dataclass(frozen=True, slots=True)
class VersionPointer:
    """The versions of one space and their roles. Immutable: every change makes a new pointer to write."""

    space: str
    versions: tuple[SpaceVersion, ...]
    current: int
    shadow: int | None = None
    previous: int | None = None

    @classmethod
    def initial(cls, space: str, encoder_spec: str) -> VersionPointer:
        """The pointer of a space that never switched: version 1, current."""
        return cls(space, (SpaceVersion(1, encoder_spec, created_at=""),), current=1)

    def version(self, number: int) -> SpaceVersion:
        for version in self.versions:
            if version.number == number:
                return version
        raise KeyError(f"space {self.space} has no version {number}")

    @property
    def current_version(self) -> SpaceVersion:
        return self.version(self.current)

    @property
    def shadow_version(self) -> SpaceVersion | None:
        return self.version(self.shadow) if self.shadow is not None else None

    @property
    def previous_version(self) -> SpaceVersion | None:
        return self.version(self.previous) if self.previous is not None else None

    def with_shadow(self, encoder_spec: str) -> VersionPointer:
        """A new version of ``encoder_spec`` as the shadow (numbers are never reused)."""
        number = max(version.number for version in self.versions) + 1
        return replace(self, versions=(*self.versions, SpaceVersion(number, encoder_spec)), shadow=number)

    def without(self, number: int) -> VersionPointer:
        """This pointer with version ``number`` gone (it must not be the current one)."""
        if number == self.current:
            raise ValueError("the current version cannot be removed")
        return replace(
            self,
            versions=tuple(v for v in self.versions if v.number != number),
            shadow=None if self.shadow == number else self.shadow,
            previous=None if self.previous == number else self.previous,
        )

    def promoted(self) -> VersionPointer:
        """The shadow made current; the current one becomes the previous (an older previous is left out)."""
        if self.shadow is None:
            raise ValueError("no shadow version to promote")
        kept = {self.current, self.shadow}
        return replace(
            self,
            versions=tuple(v for v in self.versions if v.number in kept),
            current=self.shadow,
            shadow=None,
            previous=self.current,
        )

    def rolled_back(self) -> VersionPointer:
        """The previous version current again; the one it replaces becomes the previous (roll forward again)."""
        if self.previous is None:
            raise ValueError("no previous version to roll back to")
        return replace(self, current=self.previous, previous=self.current)

    def to_json(self) -> bytes:
        data = {
            "format": FORMAT,
            "space": self.space,
            "current": self.current,
            "shadow": self.shadow,
            "previous": self.previous,
            "versions": [
                {"number": v.number, "encoder_spec": v.encoder_spec, "created_at": v.created_at} for v in self.versions
            ],
        }
        return json.dumps(data, indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes) -> VersionPointer:
        fields = json.loads(data)
        if fields.get("format") != FORMAT:
            raise ValueError(f"not a version-{FORMAT} space pointer")
        return cls(
            space=fields["space"],
            versions=tuple(SpaceVersion(**version) for version in fields["versions"]),
            current=int(fields["current"]),
            shadow=fields.get("shadow"),
            previous=fields.get("previous"),
        )


def read_pointer(space_dir: Path) -> VersionPointer | None:
    """The space's pointer (``None``: it never switched, version 1 is current)."""
    try:
        return VersionPointer.from_json((space_dir / POINTER_FILE).read_bytes())
    except FileNotFoundError:
        return None


def pointer_stamp(space_dir: Path) -> tuple[int, int] | None:
    """A cheap token that changes whenever the pointer is replaced (``None`` when there is none)."""
    try:
        stat = os.stat(space_dir / POINTER_FILE)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def write_pointer(space_dir: Path, pointer: VersionPointer) -> None:
    """Replace the pointer atomically (writer lock holder only)."""
    space_dir.mkdir(parents=True, exist_ok=True)
    staged = space_dir / f".{POINTER_FILE}.{os.getpid()}"
    fsync_file(staged, pointer.to_json())
    os.replace(staged, space_dir / POINTER_FILE)
    fsync_dir(space_dir)


def remove_version_files(space_dir: Path, number: int) -> None:
    """Delete the files of version ``number`` (no pointer may name it any more)."""
    if number != 1:
        shutil.rmtree(version_directory(space_dir, number), ignore_errors=True)
        return
    for name in _VERSION_ONE_ENTRIES:
        path = space_dir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
