"""What a root given to the indexer names (a local file or folder, a bucket prefix, a set of WebDataset shards),
and one walk over all of them that also records where prune may look."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xmodal.indexer.remote import RemotePath, is_remote, walk_bucket
from xmodal.indexer.sources import SourceFile, walk
from xmodal.indexer.webdataset import (
    KnownSamples,
    KnownShards,
    Shard,
    ShardSet,
    VanishedShards,
    is_shard_set,
    walk_shards,
)

Root = Path | RemotePath | ShardSet


def parse_root(value: str | Path | RemotePath | ShardSet) -> Root:
    """``s3://bucket/prefix`` (any fsspec store) -> a bucket prefix; ``shards/{000..009}.tar``, ``*.tar`` or
    one ``.tar`` (local or in a bucket) -> a shard set; anything else -> a local path."""
    if isinstance(value, RemotePath | ShardSet):
        return value
    text = str(value)
    if is_shard_set(text):
        return ShardSet(text).absolute()
    if is_remote(text):
        return RemotePath(text.rstrip("/"))
    return Path(text.removeprefix("file://"))


def root_name(root: Root) -> str:
    """How the catalog's run log names a root."""
    return str(root.absolute())


@dataclass
class Listing:
    """What a walk learned besides the files: the prefixes prune may look under, those that could not be listed
    (prefix -> reason), shards of a fully listed set that are gone, and a scratch folder for shard members,
    removed by :meth:`close`. With ``defer_shards`` (a Ray run), shards that must be read are left in
    ``deferred`` for the workers, one task per shard, instead of being read during the walk."""

    scratch_parent: Path
    defer_shards: bool = False
    deferred: list[Shard] = field(default_factory=list)
    prune_roots: list[str] = field(default_factory=list)
    unlisted: dict[str, str] = field(default_factory=dict)
    vanished: list[VanishedShards] = field(default_factory=list)
    _scratch: Path | None = None

    def scratch(self) -> Path:
        if self._scratch is None:
            self.scratch_parent.mkdir(parents=True, exist_ok=True)
            self._scratch = Path(tempfile.mkdtemp(prefix="shards-", dir=self.scratch_parent))
        return self._scratch

    def close(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def walk_roots(
    roots: Sequence[Root],
    *,
    listing: Listing,
    known_samples: KnownSamples,
    known_shards: KnownShards = lambda _: {},
    text_extensions: Iterable[str],
    include_hidden: bool,
    on_error: Callable[[str, str], None],
) -> Iterator[SourceFile]:
    """Every source file under ``roots``: local folders first (one walk, so a folder is entered once), then
    bucket prefixes and shard sets. A prefix or shard that cannot be listed is reported to ``on_error`` and kept
    out of ``listing.prune_roots``. ``known_samples``: what the catalog holds of a shard's samples;
    ``known_shards``: its sample counts per shard under an address prefix (for shards gone from a set)."""
    text_exts = frozenset(text_extensions)

    def unlisted(prefix: str, reason: str) -> None:
        listing.unlisted[prefix] = reason
        on_error(prefix, reason)

    local = [root for root in roots if isinstance(root, Path)]
    if local:
        yield from walk(
            local,
            text_extensions=text_exts,
            include_hidden=include_hidden,
            on_error=lambda path, reason: on_error(str(path), reason),
        )
        listing.prune_roots.extend(str(root.absolute()) for root in local)
    for root in roots:
        if isinstance(root, RemotePath):
            yield from walk_bucket(root, text_extensions=text_exts, include_hidden=include_hidden, on_unlisted=unlisted)
            if str(root) not in listing.unlisted:
                listing.prune_roots.append(str(root))
        elif isinstance(root, ShardSet):
            yield from walk_shards(
                root,
                known_samples=known_samples,
                scratch=listing.scratch,
                text_extensions=text_exts,
                on_unlisted=unlisted,
                on_listed=listing.prune_roots.append,
                on_vanished=listing.vanished.append,
                known_shards=known_shards,
                defer=listing.deferred.append if listing.defer_shards else None,
            )
