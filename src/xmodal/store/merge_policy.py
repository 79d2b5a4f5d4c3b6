"""Which segments to merge: a small tiered policy, as Lucene's ``TieredMergePolicy`` in spirit.

Segments are grouped in size tiers (each ``factor`` times the one below, starting at ``floor`` vectors); when a
tier holds ``factor`` segments they merge into one of the next tier. So a space of N vectors has about
``factor * log(N / floor)`` segments, a vector is rewritten about ``log(N / floor)`` times in its life, and a
checkpoint writes only its own batch plus, now and then, a merge of small segments. Merges that would produce
more than ``max_sync`` vectors wait for the end of the run (``final``), so a checkpoint stays cheap. A segment
whose deleted share passes ``deleted_ratio`` is rewritten without its deleted vectors.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SegmentSize:
    """A segment as the policy sees it."""

    name: str
    count: int  # vectors held, deleted ones included
    live: int  # vectors not deleted


@dataclass(frozen=True, slots=True)
class MergePolicy:
    """``factor`` segments of one tier merge; see the module docstring for the other knobs."""

    factor: int = 10
    floor: int = 2048
    max_sync: int = 250_000
    deleted_ratio: float = 0.1

    def __post_init__(self) -> None:
        if self.factor < 2:
            raise ValueError(f"a merge factor must be at least 2, got {self.factor}")
        if self.floor < 1 or self.max_sync < 1:
            raise ValueError("the merge floor and max_sync must be positive")
        if not 0 < self.deleted_ratio <= 1:
            raise ValueError(f"deleted_ratio must be in (0, 1], got {self.deleted_ratio}")

    def tier(self, count: int) -> int:
        return int(math.log(max(count, self.floor) / self.floor, self.factor) + 1e-9)

    def next_merge(self, segments: Sequence[SegmentSize], *, final: bool) -> list[str] | None:
        """The names of the segments to merge next (one group), or ``None`` when nothing needs merging."""
        allowed = math.inf if final else self.max_sync
        tiers: dict[int, list[SegmentSize]] = defaultdict(list)
        for segment in segments:
            if segment.live > 0:
                tiers[self.tier(segment.live)].append(segment)
        for tier in sorted(tiers):
            members = sorted(tiers[tier], key=lambda s: (s.live, s.name))
            if len(members) >= self.factor:
                group = members[: self.factor]
                if sum(s.live for s in group) <= allowed:
                    return [s.name for s in group]
        for segment in sorted(segments, key=lambda s: s.count):
            if segment.live == 0:
                return [segment.name]  # nothing left alive: drop it
            deleted = segment.count - segment.live
            if deleted > self.deleted_ratio * segment.count and segment.live <= allowed:
                return [segment.name]
        return None
