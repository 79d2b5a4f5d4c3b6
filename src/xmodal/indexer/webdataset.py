"""WebDataset shards as a source: each sample of a ``.tar`` shard becomes one item addressed ``shard#key``.

A shard set is named by a path, a glob or a brace pattern (``shards/{00000..00127}.tar``), on the local disk or in
a bucket. A sample's image, audio or text member is the item, its ``.txt`` the caption and its ``.json`` the
item's metadata (filterable like a sidecar's). A changed or new shard is read once, sequentially, with the
``webdataset`` package's own tar iterator, its members copied to the run's scratch folder; an unchanged shard
(same identity, and every one of its samples in the catalog) is only listed, never read.
"""

from __future__ import annotations

import glob
import io
import os
import posixpath
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Protocol

import fsspec
from fsspec.core import split_protocol
from fsspec.utils import glob_translate

from xmodal.errors import ConfigError
from xmodal.indexer.remote import ListingError, filesystem, identity, is_remote
from xmodal.indexer.sources import SourceFile, media_extensions

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_VERSION_SAMPLES = ";samples="
_SPECIAL = frozenset({"__key__", "__url__", "__local_path__"})


class KnownItem(Protocol):
    """What the catalog remembers of an item (``FileState`` fits)."""

    size: int
    mtime_ns: int
    sidecar_mtime_ns: int | None
    source_version: str | None


KnownSamples = Callable[[str], Sequence[tuple[str, KnownItem]]]  # shard address -> (path, state) of its samples
KnownShards = Callable[[str], Mapping[str, int]]  # address prefix -> samples the catalog holds per shard under it

_EXTRA = "WebDataset shards need the cloud extra: pip install 'xmodal[cloud]'"


def _braceexpand(pattern: str) -> list[str]:
    if "{" not in pattern:
        return [pattern]
    try:
        from braceexpand import braceexpand  # webdataset's own dependency
    except ImportError as exc:
        raise ConfigError(f"{pattern} is a brace pattern; {_EXTRA}") from exc
    return list(braceexpand(pattern))


def is_shard_set(text: str) -> bool:
    """True when ``text`` names ``.tar`` shards (a path, a glob or a brace pattern)."""
    return any(name.lower().endswith(SHARD_SUFFIXES) for name in _braceexpand(text))


@dataclass(frozen=True, slots=True)
class ShardSet:
    """A set of shards, as the user named it."""

    pattern: str

    def __str__(self) -> str:
        return self.pattern

    def absolute(self) -> ShardSet:
        """The set with its local path made absolute; a pattern that starts with a brace (``{/a/x.tar,b/*.tar}``)
        is kept as given (each alternative is made absolute when it is listed)."""
        if is_remote(self.pattern) or self.pattern.startswith("{"):
            return self
        return ShardSet(os.path.abspath(self.pattern))


@dataclass(frozen=True, slots=True)
class Shard:
    """One shard file: its address (a URL or an absolute path) and the store's identity of it."""

    address: str
    identity: str

    def __str__(self) -> str:
        return self.address

    def as_uri(self) -> str:
        return self.address


@dataclass(frozen=True, slots=True)
class SampleMember:
    """A member of a sample (``role``: the item itself, its caption or its metadata), read from the run's scratch
    copy, or, when there is none (an unchanged shard whose sample needs a new space), from the shard itself."""

    sample: str  # shard#key
    role: str  # "media", "caption" or "metadata"
    member: str = ""  # the member's extension in the shard, e.g. "jpg" (empty when not known)
    local: Path | None = None

    def __str__(self) -> str:
        return self.sample if self.role == "media" else f"{self.sample}.{self.member or self.role}"

    @property
    def name(self) -> str:
        key = self.sample.rpartition("#")[2]
        return f"{posixpath.basename(key)}.{self.member}" if self.member else posixpath.basename(key)

    @property
    def suffix(self) -> str:
        return f".{self.member.rsplit('.', 1)[-1]}" if self.member else ""

    def as_uri(self) -> str:
        return self.sample

    def open(self, mode: str = "rb") -> IO[bytes]:
        if self.local is not None:
            return self.local.open("rb")
        members = roles(read_sample(self.sample), text_extensions=frozenset({".txt"}))
        if self.role not in members:
            if self.role == "metadata":
                return io.BytesIO(b"{}")  # a sample without a .json has no metadata
            raise FileNotFoundError(f"{self.sample} has no {self.role} member")
        return io.BytesIO(members[self.role][1])

    def read_bytes(self) -> bytes:
        with self.open() as handle:
            return handle.read()

    def read_at_most(self, limit: int) -> bytes:
        with self.open() as handle:
            return handle.read(limit + 1)[: limit + 1]


def roles(sample: Mapping[str, Any], *, text_extensions: frozenset[str]) -> dict[str, tuple[str, bytes]]:
    """role -> (member extension, bytes): the sample's media (an image or audio member, else a text member), its
    caption (a text member beside media) and its metadata (``.json``)."""
    members = sorted((name, value) for name, value in sample.items() if name not in _SPECIAL)
    media_exts = media_extensions()
    found: dict[str, tuple[str, bytes]] = {}
    for name, value in members:
        if "media" not in found and f".{name.rsplit('.', 1)[-1]}" in media_exts:
            found["media"] = (name, value)
    texts = [(name, value) for name, value in members if f".{name.rsplit('.', 1)[-1]}" in text_extensions]
    texts.sort(key=lambda member: member[0] != "txt")
    if texts:
        found["caption" if "media" in found else "media"] = texts[0]
    if "json" in sample:
        found["metadata"] = ("json", sample["json"])
    return found


def _shard_filesystem(pattern: str) -> tuple[fsspec.AbstractFileSystem, str, str | None]:
    protocol, path = split_protocol(pattern)
    if is_remote(pattern):
        return filesystem(protocol or ""), path, protocol
    return fsspec.filesystem("file"), os.path.abspath(path), None


@dataclass(frozen=True, slots=True)
class VanishedShards:
    """Shards the catalog holds samples of that a set's globs match but its listing (complete, without an error)
    no longer found: their samples are gone. ``total``: the catalog's samples of every shard the set matches, for
    the share prune may take at once."""

    shard_set: str
    shards: tuple[str, ...]
    total: int


def _matchers(shard_set: ShardSet) -> list[tuple[str | None, re.Pattern[str]]]:
    """(protocol, compiled glob) of each pattern of the set, as fsspec's glob reads it (``*`` stays in a folder)."""
    found = []
    for pattern in _braceexpand(shard_set.pattern):
        _, path, protocol = _shard_filesystem(pattern)
        found.append((protocol, re.compile(glob_translate(path))))
    return found


def static_prefix(shard_set: ShardSet) -> str:
    """The part of the set's pattern before its first brace or glob character: every shard it names starts so."""
    found = re.search(r"[{*?\[]", shard_set.pattern)
    return shard_set.pattern if found is None else shard_set.pattern[: found.start()]


def vanished_shards(shard_set: ShardSet, listed: Collection[str], known: Mapping[str, int]) -> VanishedShards | None:
    """The known shards (address -> samples in the catalog) that ``shard_set`` names and ``listed`` lacks."""
    matchers = _matchers(shard_set)

    def named(address: str) -> bool:
        protocol, path = split_protocol(address)
        return any(protocol == wanted and matcher.match(path) for wanted, matcher in matchers)

    mine = {address: count for address, count in known.items() if named(address)}
    gone = tuple(sorted(address for address in mine if address not in listed))
    if not gone:
        return None
    return VanishedShards(shard_set.pattern, gone, sum(mine.values()))


def list_shards(shard_set: ShardSet, on_unlisted: ListingError) -> list[Shard]:
    """The shards a set names, with their identities; a pattern that cannot be listed is reported and skipped."""
    shards: list[Shard] = []
    for pattern in _braceexpand(shard_set.pattern):
        fs, path, protocol = _shard_filesystem(pattern)
        try:
            infos = fs.glob(path, detail=True) if glob.has_magic(path) else {path: fs.info(path)}
            if not infos:
                raise FileNotFoundError(f"no shard matches {pattern}")
        except ConfigError:
            raise
        except Exception as exc:  # each store raises its own errors: any of them leaves this pattern unlisted
            on_unlisted(pattern, f"cannot list shards {pattern}: {type(exc).__name__}: {exc}")
            continue
        for name, info in sorted(infos.items()):
            address = f"{protocol}://{name}" if protocol else name
            shards.append(Shard(address, identity(info)))
    return shards


def _open_shard(address: str) -> IO[bytes]:
    fs, path, _ = _shard_filesystem(address)
    return fs.open(path, "rb")


def iter_samples(address: str) -> Iterator[dict[str, Any]]:
    """The samples of one shard, in order, read sequentially once (webdataset's grouping of members by key)."""
    try:
        from webdataset.tariterators import group_by_keys, tar_file_iterator
    except ImportError as exc:
        raise ConfigError(_EXTRA) from exc

    with _open_shard(address) as handle:
        members = ({**member, "__url__": address} for member in tar_file_iterator(handle))
        yield from group_by_keys(members)


def read_sample(sample: str) -> dict[str, Any]:
    """The members of the sample addressed ``shard#key`` (reads the shard up to it)."""
    address, _, key = sample.rpartition("#")
    for found in iter_samples(address):
        if found["__key__"] == key:
            return found
    raise FileNotFoundError(f"{address} holds no sample {key}")


def _complete(previous: list[tuple[str, KnownItem]], shard: Shard) -> bool:
    """True when the catalog holds every sample of this very shard (a run killed mid-shard holds fewer)."""
    if not previous:
        return False
    versions = {state.source_version for _, state in previous}
    if len(versions) != 1:
        return False
    version = versions.pop() or ""
    head, _, count = version.rpartition(_VERSION_SAMPLES)
    return head == shard.identity and count.isdigit() and int(count) == len(previous)


def extract_shard(shard: Shard, directory: Path, text_extensions: frozenset[str]) -> list[SourceFile]:
    """Read ``shard`` once, sequentially, and copy each sample's members to ``directory``; one source file per
    sample, each carrying the shard's version (its identity and its number of samples)."""
    directory.mkdir(parents=True, exist_ok=True)
    files: list[SourceFile] = []
    for number, sample in enumerate(iter_samples(shard.address)):
        found = roles(sample, text_extensions=text_extensions)
        if "media" not in found:
            continue  # nothing this engine indexes (e.g. only .cls or .npy members)
        address = f"{shard.address}#{sample['__key__']}"
        members: dict[str, SampleMember] = {}
        for role, (member, data) in found.items():
            local = directory / f"{number:08d}.{member}"
            local.write_bytes(data)
            members[role] = SampleMember(address, role, member, local)
        files.append(
            SourceFile(
                path=members["media"],
                root=shard,
                size=len(found["media"][1]),
                mtime_ns=0,
                sidecar=members.get("caption"),
                metadata_sidecar=members.get("metadata"),
            )
        )
    version = f"{shard.identity}{_VERSION_SAMPLES}{len(files)}"
    return [replace(sample, version=version) for sample in files]


def detached(source: SourceFile) -> SourceFile:
    """``source`` without its scratch copies (to send it to another process, where they do not exist)."""

    def member(value: Any) -> Any:
        return replace(value, local=None) if isinstance(value, SampleMember) else value

    return replace(source, path=member(source.path), sidecar=member(source.sidecar),
                   metadata_sidecar=member(source.metadata_sidecar))  # fmt: skip


def walk_shards(
    shard_set: ShardSet,
    *,
    known_samples: KnownSamples,
    scratch: Callable[[], Path],
    text_extensions: frozenset[str],
    on_unlisted: ListingError,
    on_listed: Callable[[str], None],
    on_vanished: Callable[[VanishedShards], None] = lambda _: None,
    known_shards: KnownShards = lambda _: {},
    defer: Callable[[Shard], None] | None = None,
) -> Iterator[SourceFile]:
    """The samples of every shard in the set. An unchanged shard yields its samples as the catalog knows them,
    without a read; a shard that cannot be read is reported to ``on_unlisted``; each shard that was listed and
    read (or known complete) is passed to ``on_listed``, where prune may look. Known shards the set's globs match
    that are no longer there go to ``on_vanished``, only when every pattern of the set was listed without error
    (a shard named without a glob that is missing is a listing error). ``known_samples``: what the catalog holds
    of one shard's samples; ``known_shards``: how many samples it holds per shard address under a prefix."""
    failed: list[str] = []

    def unlisted(pattern: str, reason: str) -> None:
        failed.append(pattern)
        on_unlisted(pattern, reason)

    shards = list_shards(shard_set, unlisted)
    if not failed:
        known = known_shards(static_prefix(shard_set))
        gone = vanished_shards(shard_set, {shard.address for shard in shards}, known)
        if gone is not None:
            on_vanished(gone)
    for number, shard in enumerate(shards):
        previous = list(known_samples(shard.address))
        if _complete(previous, shard):
            on_listed(shard.address)
            for path, state in previous:
                yield SourceFile(
                    path=SampleMember(path, "media"),
                    root=shard,
                    size=state.size,
                    mtime_ns=state.mtime_ns,
                    sidecar=SampleMember(path, "caption"),
                    sidecar_mtime_ns=state.sidecar_mtime_ns,
                    metadata_sidecar=SampleMember(path, "metadata"),
                    version=state.source_version,
                )
            continue
        if defer is not None:
            defer(shard)
            continue
        try:
            samples = extract_shard(shard, scratch() / f"shard-{number:06d}", text_extensions)
        except ConfigError:
            raise
        except Exception as exc:  # a truncated or corrupt tar: nothing of it is indexed, nothing of it pruned
            on_unlisted(shard.address, f"cannot read shard {shard.address}: {type(exc).__name__}: {exc}")
            continue
        on_listed(shard.address)
        yield from samples
