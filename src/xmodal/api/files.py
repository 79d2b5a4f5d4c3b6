"""Serving indexed files safely: what was checked is what is sent.

The item's path is resolved once, the result must lie in the item's source folder, and the file is opened from
that resolved path without following a final link. On Linux the opened descriptor's own path (``/proc/self/fd``)
is checked again and is what the response reads, so a link swapped in between the check and the read is never
followed.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from fastapi import HTTPException, status

from xmodal.store.models import Item, ItemStatus

_PROC_FD = Path("/proc/self/fd")


@dataclass
class OpenedFile:
    """An indexed file, open for reading; ``path`` reads the very file opened (close when the response is sent)."""

    descriptor: int
    path: str
    size: int
    mtime_ns: int

    def read(self, limit: int) -> bytes:
        """The whole file from the start, at most ``limit`` bytes (413 past that)."""
        if self.size > limit:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"The file is over {limit} bytes.")
        return os.pread(self.descriptor, self.size, 0)

    def close(self) -> None:
        os.close(self.descriptor)


def open_served(item: Item) -> OpenedFile:
    """The item's file, opened if it is still a regular file inside its source folder; 404 or 403 otherwise."""
    if item.status != ItemStatus.OK:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"Item {item.id} was not indexed ({item.error}).")
    source = Path(url2pathname(urlsplit(item.source).path)).resolve()
    resolved = Path(item.path).resolve()
    if not resolved.is_relative_to(source):  # a symbolic link leading out of the indexed folder
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"Item {item.id}'s file lies outside its source folder.")
    try:
        descriptor = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"Item {item.id}'s file is no longer on disk.") from exc
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"Item {item.id}'s file is no longer a regular file.")
        served = str(resolved)
        if _PROC_FD.is_dir():
            served = str(_PROC_FD / str(descriptor))
            if not Path(os.readlink(served)).is_relative_to(source):  # a folder on the way was swapped meanwhile
                raise HTTPException(status.HTTP_403_FORBIDDEN, f"Item {item.id}'s file lies outside its source folder.")
    except BaseException:
        os.close(descriptor)
        raise
    return OpenedFile(descriptor, served, info.st_size, info.st_mtime_ns)
