"""Pipeline stage 1b: the walk against the catalog, in batches, keeping only the files that have work.

Each batch of walked files is looked up by path (one statement per ``lookup_batch`` files) with its items'
spaces; an unchanged file whose item has every vector it needs is counted and forgotten. What stays in memory
for the whole run is the work (new, changed and incomplete files), the earlier failures to report again, and an
8-byte hash per path seen (for prune), so a re-run over millions of unchanged files needs megabytes, not the
catalog's size in Python objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from xmodal.indexer.sources import SourceFile
from xmodal.modality import Modality
from xmodal.spaces import VectorSpace
from xmodal.store.catalog import Catalog, FileState
from xmodal.store.models import Item, ItemStatus
from xmodal.store.segments import unique_ids

LOOKUP_BATCH = 1000  # walked files looked up in the catalog together


def path_hash(path: str) -> int:
    """A 64-bit hash of a path, stable within this process (a run asks in the process that walked). Two paths
    sharing one only keep a missing file from being pruned."""
    return hash(path)


class PathSet:
    """The paths a walk saw, as sorted 64-bit hashes, and the folders (or shards) that held them.

    Answers ``path in seen`` for prune, and whether anything was seen under a root, in 8 bytes per path.
    """

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._pending: list[int] = []
        self._sorted = np.zeros(0, dtype=np.int64)
        self._containers: set[str] = set()

    def add(self, path: str) -> None:
        self._pending.append(path_hash(path))
        self._containers.add(path.rpartition("#" if "#" in path else "/")[0])
        if len(self._pending) >= 65_536:  # a Python int list costs 4x an array: pack it
            self._parts.append(np.asarray(self._pending, dtype=np.int64))
            self._pending = []

    def _seal(self) -> None:
        """Sort what was added since the last question (once after a walk, not per block)."""
        if self._pending:
            self._parts.append(np.asarray(self._pending, dtype=np.int64))
            self._pending = []
        if self._parts:
            self._sorted = unique_ids(np.concatenate([self._sorted, *self._parts]))
            self._parts = []

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str):
            return False
        self._seal()
        wanted = np.int64(path_hash(path))
        position = int(np.searchsorted(self._sorted, wanted))
        return position < len(self._sorted) and self._sorted[position] == wanted

    def __len__(self) -> int:
        self._seal()
        return len(self._sorted)

    def any_under(self, root: str) -> bool:
        """Whether a path at ``root`` (a file root), below it, or among its samples (``root#key``) was seen."""
        return root in self or any(c == root or c.startswith((f"{root}/", f"{root}#")) for c in self._containers)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A walked file that may have work: ``state`` is what the catalog knows when the file is unchanged (None
    when it is new or changed); ``spaces``: the spaces its item has vectors in."""

    source: SourceFile
    state: FileState | None
    spaces: frozenset[str] = frozenset()


@dataclass
class Scan:
    """What the walk found that has work, checked against the catalog batch by batch (see the module docstring).

    ``wanted``: the spaces that may embed in this run; ``ocr``: whether OCR may read images. A later, smaller set
    of spaces (some failed to load) only has less work, never more, so the candidates kept stay enough.
    """

    catalog: Catalog
    wanted: list[VectorSpace]
    ocr: bool = False
    lookup_batch: int = LOOKUP_BATCH
    candidates: list[Candidate] = field(default_factory=list)
    known_failures: list[tuple[int, str]] = field(default_factory=list)  # (item id, path), unchanged since
    seen: PathSet = field(default_factory=PathSet)
    errors: set[str] = field(default_factory=set)  # roots whose walk reported an error
    count: int = 0
    _batch: list[SourceFile] = field(default_factory=list)

    def add(self, source: SourceFile) -> None:
        self.count += 1
        self.seen.add(str(source.path))
        self._batch.append(source)
        if len(self._batch) >= self.lookup_batch:
            self.flush()

    def flush(self) -> None:
        """Look the batch up in the catalog and keep what has work (call once more after the walk)."""
        batch, self._batch = self._batch, []
        if not batch:
            return
        states = self.catalog.file_states(str(source.path) for source in batch)
        coverage = self.catalog.spaces_by_item(state.item_id for state in states.values())
        for source in batch:
            path = str(source.path)
            state = states.get(path)
            if state is None or not unchanged(source, state):
                self.candidates.append(Candidate(source, None))
                continue
            spaces = frozenset(coverage.get(state.item_id, ()))
            if state.status == ItemStatus.FAILED:
                self.known_failures.append((state.item_id, path))
            if not covered(state, spaces, self.wanted, ocr=self.ocr):
                self.candidates.append(Candidate(source, state, spaces))

    def select(self, active: Sequence[VectorSpace], *, ocr: bool = False) -> list[SourceFile]:
        """New and changed files, and unchanged ones lacking vectors in an active space that can embed them (or,
        with ``ocr``, images OCR has not read yet)."""
        return [c.source for c in self.candidates if c.state is None or not covered(c.state, c.spaces, active, ocr=ocr)]

    def only_ocr(self, active: Sequence[VectorSpace]) -> dict[str, int]:
        """Path -> item id of the unchanged files that have every vector and only lack OCR: their vectors stay."""
        return {
            str(c.source.path): c.state.item_id
            for c in self.candidates
            if c.state is not None
            and covered(c.state, c.spaces, active)
            and not covered(c.state, c.spaces, active, ocr=True)
        }


def has_text(item: Item) -> bool:
    return item.caption is not None or item.transcript is not None or item.modality == Modality.TEXT


def unchanged(source: SourceFile, state: FileState) -> bool:
    return (
        state.size == source.size
        and state.mtime_ns == source.mtime_ns
        and state.sidecar_mtime_ns == source.sidecar_mtime_ns
        and state.source_version == source.version
    )


def covered(state: FileState, have: Iterable[str], active: Sequence[VectorSpace], *, ocr: bool = False) -> bool:
    """True when the item has vectors in every active space that can embed it (and, with ``ocr``, an image has been
    read for text); ``have``: the spaces it has vectors in."""
    if state.status == ItemStatus.FAILED or state.modality is None:
        return True
    if ocr and state.modality == Modality.IMAGE and not state.ocr_read:
        return False
    spaces = set(have)
    modality = Modality(state.modality)
    for space in active:
        wanted = space.embeds(modality) or (state.has_text and space.embeds(Modality.TEXT))
        if wanted and space.key not in spaces:  # a version's rows are named by its key (clip@v2)
            return False
    return True


CoverageLookup = Callable[[int], frozenset[str]]


def coverage_lookup(catalog: Catalog) -> CoverageLookup:
    """Item id -> its spaces, one catalog look-up each (for the few items a run asks about)."""
    return lambda item_id: frozenset(catalog.spaces_by_item([item_id]).get(item_id, ()))
