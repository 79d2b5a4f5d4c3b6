"""Changing a space's model without downtime: start a shadow version, promote it, roll back, forget the old one.

A switch (``xmodal spaces switch clip --to SPEC``) only records a shadow version in the space's pointer; the
index runs build it (:mod:`xmodal.indexer.shadow`) from the stored files while searches keep using the current
version. When the shadow holds vectors for every item the current version has (or on ``--promote``), one atomic
replacement of the pointer makes it current; the version it replaces stays, for ``rollback``, until
``forget_old``. Every function here writes, so the caller holds the home's writer lock.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass

from xmodal.errors import ConfigError, NotFoundError
from xmodal.spaces import SpaceSet, VectorSpace
from xmodal.store.catalog import Catalog
from xmodal.store.manifest import read_manifest
from xmodal.store.version_rows import forget_key, items_lacking, items_with_vectors
from xmodal.store.versions import (
    VersionPointer,
    catalog_key,
    remove_version_files,
    version_directory,
    write_pointer,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VersionState:
    """One version of a space as stats show it."""

    number: int
    role: str  # current, shadow or previous
    encoder_spec: str
    vectors: int  # published vectors
    items: int | None  # items with vectors in this version's catalog rows (counted only while there are two)


@dataclass(frozen=True, slots=True)
class SwitchState:
    """A space's versions and, while a switch is under way, how far its shadow has come."""

    space: str
    versions: tuple[VersionState, ...]
    covered: int = 0  # items of the current version the shadow has vectors for
    total: int = 0  # items the current version has vectors for

    @property
    def switching(self) -> bool:
        return any(version.role == "shadow" for version in self.versions)

    @property
    def progress(self) -> float | None:
        """Share of the current version's items the shadow covers (``None`` without a switch)."""
        if not self.switching:
            return None
        return self.covered / self.total if self.total else 1.0

    def role(self, role: str) -> VersionState | None:
        return next((version for version in self.versions if version.role == role), None)


def _space(spaces: SpaceSet, name: str) -> VectorSpace:
    if name not in spaces:
        raise NotFoundError(f"No space named '{name}'. Spaces: {', '.join(spaces.names())}.")
    return spaces[name]


def state(spaces: SpaceSet, catalog: Catalog, name: str) -> SwitchState:
    """The versions of space ``name`` and the progress of its shadow (one count query per version)."""
    _space(spaces, name)
    pointer = spaces.pointer(name)
    space_dir = spaces.factory.space_dir(name)
    versions = []
    counts: dict[int, int | None] = {}
    several = len(pointer.versions) > 1  # a space that never switched costs no count over its rows
    for role, number in (("current", pointer.current), ("shadow", pointer.shadow), ("previous", pointer.previous)):
        if number is None:
            continue
        manifest = read_manifest(version_directory(space_dir, number))
        live = manifest.count - manifest.tombstone_count if manifest is not None else 0
        counts[number] = items_with_vectors(catalog, catalog_key(name, number)) if several else None
        spec = pointer.version(number).encoder_spec
        versions.append(VersionState(number, role, spec, live, counts[number]))
    if pointer.shadow is None:
        return SwitchState(name, tuple(versions))
    total = counts[pointer.current] or 0
    missing = len(items_lacking(catalog, catalog_key(name, pointer.current), catalog_key(name, pointer.shadow)))
    return SwitchState(name, tuple(versions), covered=total - missing, total=total)


def start(spaces: SpaceSet, catalog: Catalog, name: str, encoder_spec: str) -> SwitchState:
    """Record a shadow version of ``name`` made by ``encoder_spec``; the next index runs build it. Starting the
    switch already under way again changes nothing."""
    current = _space(spaces, name)
    pointer = spaces.pointer(name)
    shadow = pointer.shadow_version
    if shadow is not None:
        if shadow.encoder_spec == encoder_spec:
            return state(spaces, catalog, name)
        raise ConfigError(
            f"Space '{name}' is already switching to {shadow.encoder_spec}; cancel that first: "
            f"xmodal spaces switch {name} --cancel"
        )
    if encoder_spec == current.encoder.spec:
        raise ConfigError(f"Space '{name}' already uses {encoder_spec}.")
    if pointer.previous is not None:
        log.info("space %s: the switch replaces previous version %d for rollback", name, pointer.previous)
    encoder = spaces.factory.build(encoder_spec, spaces.factory.settings)
    fingerprint = encoder.fingerprint  # loads the model: missing weights fail here, not in the night's run
    updated = pointer.with_shadow(encoder_spec)
    number = updated.shadow
    assert number is not None
    catalog.save_space(name=catalog_key(name, number), encoder_spec=encoder_spec, dim=encoder.dim,
                       fingerprint=fingerprint)  # fmt: skip
    version_directory(spaces.factory.space_dir(name), number).mkdir(parents=True, exist_ok=True)
    write_pointer(spaces.factory.space_dir(name), updated)
    spaces.refresh(wait=True)
    log.info("space %s: switching to %s as version %d", name, encoder_spec, number)
    return state(spaces, catalog, name)


def cancel(spaces: SpaceSet, catalog: Catalog, name: str) -> int:
    """Abandon the switch under way: its rows and files go; returns how many vectors went."""
    _space(spaces, name)
    pointer = spaces.pointer(name)
    if pointer.shadow is None:
        raise ConfigError(f"Space '{name}' has no switch under way.")
    return _forget(spaces, catalog, name, pointer, pointer.shadow)


def promote(spaces: SpaceSet, catalog: Catalog, name: str, *, force: bool = False) -> SwitchState:
    """Make the shadow current in one atomic step. Without ``force`` it must cover every item of the current
    version. The current version becomes the previous one (an older previous version is forgotten)."""
    _space(spaces, name)
    progress = state(spaces, catalog, name)
    if not progress.switching:
        raise ConfigError(
            f"Space '{name}' has no switch under way: start one with xmodal spaces switch {name} --to SPEC"
        )
    if not force and progress.covered < progress.total:
        raise ConfigError(
            f"The new version of '{name}' covers {progress.covered} of {progress.total} items; let the index runs "
            f"finish it, or promote it now with xmodal spaces switch {name} --promote"
        )
    spaces.save(final=True, apply_queued=True)  # everything written so far is published in both versions
    pointer = spaces.pointer(name)
    space_dir = spaces.factory.space_dir(name)
    if read_manifest(version_directory(space_dir, pointer.shadow or 0)) is None:
        raise ConfigError(f"The new version of '{name}' holds no vectors yet: run xmodal index first.")
    older = pointer.previous
    write_pointer(space_dir, pointer.promoted())
    if older is not None:
        _drop_version(spaces, catalog, name, older)
    spaces.refresh(wait=True)
    log.info("space %s: version %d is current", name, spaces[name].version)
    return state(spaces, catalog, name)


def rollback(spaces: SpaceSet, catalog: Catalog, name: str) -> SwitchState:
    """Make the previous version current again (the one it replaces becomes the previous: roll forward)."""
    _space(spaces, name)
    pointer = spaces.pointer(name)
    if pointer.previous is None:
        raise ConfigError(f"Space '{name}' has no previous version to roll back to.")
    spaces.save(final=True, apply_queued=True)
    write_pointer(spaces.factory.space_dir(name), pointer.rolled_back())
    spaces.refresh(wait=True)
    return state(spaces, catalog, name)


def forget_old(spaces: SpaceSet, catalog: Catalog, name: str) -> int:
    """Delete the previous version (rows and files; no rollback after this); returns how many vectors went."""
    _space(spaces, name)
    pointer = spaces.pointer(name)
    if pointer.previous is None:
        raise ConfigError(f"Space '{name}' has no previous version to forget.")
    return _forget(spaces, catalog, name, pointer, pointer.previous)


def drop(spaces: SpaceSet, catalog: Catalog, name: str) -> int:
    """Delete every version of the space (rows and files); it starts again as version 1 of the settings' model."""
    _space(spaces, name)
    pointer = spaces.pointer(name)
    spaces.release_writers()
    count = sum(forget_key(catalog, version.key(name)) for version in pointer.versions)
    shutil.rmtree(spaces.factory.space_dir(name), ignore_errors=True)
    spaces.reset(name)
    return count


def _forget(spaces: SpaceSet, catalog: Catalog, name: str, pointer: VersionPointer, number: int) -> int:
    write_pointer(spaces.factory.space_dir(name), pointer.without(number))  # no reader is sent there any more
    count = _drop_version(spaces, catalog, name, number)
    spaces.refresh(wait=True)
    return count


def _drop_version(spaces: SpaceSet, catalog: Catalog, name: str, number: int) -> int:
    count = forget_key(catalog, catalog_key(name, number))
    remove_version_files(spaces.factory.space_dir(name), number)
    return count
