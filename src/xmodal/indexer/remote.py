"""Object-storage sources through fsspec: ``s3://bucket/prefix``, ``gs://...``, ``az://...``.

Credentials come the usual way for each store (for S3: the environment, ``~/.aws`` files, instance roles; for GCS:
application default credentials; for Azure: ``AZURE_STORAGE_*``); non-secret options such as an endpoint come
from the store's own variables (``AWS_ENDPOINT_URL``) or fsspec's configuration (``FSSPEC_S3_ENDPOINT_URL``,
``~/.config/fsspec/``). xmodal keeps only the object's URL and its identity, never a credential.

A listing gives each object's identity (ETag, generation or version id, with size and last-modified time), so an
unchanged bucket is listed and compared, and no object is read.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

import fsspec
from fsspec.core import split_protocol

from xmodal.errors import ConfigError
from xmodal.indexer.sources import SourceFile, media_extensions, pair_sidecars

LOCAL_PROTOCOLS = frozenset({"file", "local"})
_IDENTITY_KEYS = ("VersionId", "generation", "ETag", "etag", "md5Hash", "content_md5")
_TIME_KEYS = ("LastModified", "updated", "last_modified", "mtime", "modified")

ListingError = Callable[[str, str], None]


def is_remote(text: str) -> bool:
    """True for a URL of a store other than the local disk (``s3://``, ``gs://``, ``az://``, ...)."""
    protocol, _ = split_protocol(text)
    return protocol is not None and protocol not in LOCAL_PROTOCOLS


# The package fsspec needs for each store, when it is missing (s3fs comes with the cloud extra).
STORE_PACKAGES = {
    "s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs",
    "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs", "adl": "adlfs",
}  # fmt: skip


def filesystem(protocol: str) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem for ``protocol`` (one per process and protocol), listings never cached: a re-run
    must see the store as it is now. ``ConfigError`` naming the package to install when the store's is missing."""
    try:
        return fsspec.filesystem(protocol, use_listings_cache=False)
    except (ImportError, ValueError) as exc:
        package = STORE_PACKAGES.get(protocol)
        remedies = {
            "gcsfs": "install gcsfs with the gcs extra (pip install 'xmodal[gcs]', or pip install gcsfs)",
            "adlfs": "install adlfs with the azure extra (pip install 'xmodal[azure]', or pip install adlfs)",
        }
        remedy = remedies.get(package or "", "install the cloud extra (pip install 'xmodal[cloud]')")
        raise ConfigError(f"Cannot open {protocol}:// URLs ({exc}): {remedy}.") from exc


@dataclass(frozen=True, slots=True)
class RemotePath:
    """An object (or a prefix) in a store, addressed by its URL. Picklable: the filesystem is looked up on use."""

    url: str

    def __str__(self) -> str:
        return self.url

    @property
    def protocol(self) -> str:
        return split_protocol(self.url)[0] or "file"

    @property
    def key(self) -> str:
        """The path inside the store (``bucket/prefix/name``), as fsspec names it."""
        return split_protocol(self.url)[1]

    @property
    def name(self) -> str:
        return posixpath.basename(self.url.rstrip("/"))

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    def absolute(self) -> RemotePath:
        return self

    def as_uri(self) -> str:
        return self.url.rstrip("/")

    def child(self, key: str) -> RemotePath:
        return RemotePath(f"{self.protocol}://{key}")

    def open(self, mode: str = "rb") -> IO[bytes]:
        """A streamed read of the object (block by block, never the whole object at once)."""
        if mode != "rb":
            raise ValueError("remote sources are read-only")
        return filesystem(self.protocol).open(self.key, "rb")

    def read_bytes(self) -> bytes:
        with self.open() as handle:
            return handle.read()

    def read_at_most(self, limit: int) -> bytes:
        """The object's bytes; ``OSError`` when it holds more than ``limit`` (it grew after it was listed)."""
        with self.open() as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise OSError(f"{self.url} grew to over {limit} bytes after it was listed; run the indexer again")
        return data

    def sign(self, seconds: int) -> str | None:
        """A short-lived URL a client may fetch the object from, or ``None`` where the store cannot sign."""
        try:
            return str(filesystem(self.protocol).sign(self.key, expiration=seconds))
        except NotImplementedError:
            return None


def identity(info: dict[str, Any]) -> str:
    """The store's identity of an object from its listing entry: version id, generation or ETag, with its size."""
    for key in _IDENTITY_KEYS:
        value = info.get(key)
        if value:
            return f"{key}={str(value).strip(chr(34))};size={info.get('size')}"
    return f"size={info.get('size')};mtime={modified_ns(info)}"


def modified_ns(info: dict[str, Any]) -> int:
    """The object's last-modified time in nanoseconds since the epoch (0 when the store gives none)."""
    for key in _TIME_KEYS:
        value = info.get(key)
        if isinstance(value, datetime):
            return int(value.timestamp() * 1_000_000_000)
        if isinstance(value, int | float):
            return int(value * 1_000_000_000)
        if isinstance(value, str):
            try:
                return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1_000_000_000)
            except ValueError:
                continue
    return 0


def list_objects(fs: fsspec.AbstractFileSystem, key: str) -> dict[str, dict[str, Any]]:
    """Every object under ``key`` (a prefix, or one object) with its listing entry; raises what the store raised."""
    found = fs.find(key, detail=True)
    if not found:
        info = fs.info(key)  # one object named directly, or FileNotFoundError
        if info.get("type") != "directory":
            found = {key: info}
    return {name: info for name, info in found.items() if info.get("type", "file") == "file"}


def walk_bucket(
    root: RemotePath,
    *,
    text_extensions: frozenset[str],
    include_hidden: bool,
    on_unlisted: ListingError,
) -> Iterator[SourceFile]:
    """The objects under ``root`` as source files, paired with their sidecars as in a folder. A listing that fails
    is reported to ``on_unlisted`` (the prefix, the reason) and yields nothing."""
    fs = filesystem(root.protocol)  # ConfigError when the store's package is missing: a setup error, not a listing
    try:
        objects = list_objects(fs, root.key.rstrip("/"))
    except Exception as exc:  # every store raises its own errors; any of them means this prefix is unlisted
        on_unlisted(str(root), f"cannot list {root}: {type(exc).__name__}: {exc}")
        return
    by_folder: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for key, info in sorted(objects.items()):
        folder, name = posixpath.split(key)
        if include_hidden or not name.startswith("."):
            by_folder[folder][name] = info
    media_exts = media_extensions()
    for folder, files in by_folder.items():
        names = sorted(files)
        for name, sidecar, metadata in pair_sidecars(names, text_exts=text_extensions, media_exts=media_exts):
            sidecars = [other for other in (sidecar, metadata) if other is not None]
            info = files[name]
            yield SourceFile(
                path=root.child(f"{folder}/{name}"),
                root=root,
                size=int(info.get("size") or 0),
                mtime_ns=modified_ns(info),
                sidecar=root.child(f"{folder}/{sidecar}") if sidecar else None,
                sidecar_mtime_ns=max(modified_ns(files[other]) for other in sidecars) if sidecars else None,
                metadata_sidecar=root.child(f"{folder}/{metadata}") if metadata else None,
                version=" + ".join(identity(files[other]) for other in [name, *sidecars]),
            )
