"""One indexer per home at a time: a file lock for SQLite homes, an advisory lock on PostgreSQL.

The holder writes who it is (pid, host, start time) beside the lock, so a second run can say who holds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout
from sqlalchemy import text

from xmodal.errors import IndexLockedError
from xmodal.store.catalog import Catalog


def _holder() -> dict[str, object]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now(UTC).isoformat(timespec="seconds")}


def _describe(info_path: Path) -> str:
    try:
        info = json.loads(info_path.read_text())
        return f"pid {info['pid']} on {info['host']}, running since {info['since']}"
    except (OSError, ValueError, KeyError):
        return "another process"


@contextlib.contextmanager
def index_lock(home: Path, catalog: Catalog) -> Iterator[None]:
    """Hold the home's indexing lock for the block; ``IndexLockedError`` at once if another run holds it."""
    home.mkdir(parents=True, exist_ok=True)
    info_path = home / "index.lock.json"
    lock = FileLock(home / "index.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout as exc:
        raise IndexLockedError(
            f"Another indexer is running on {home} ({_describe(info_path)}). It was not disturbed; "
            "run again when it has finished."
        ) from exc
    try:
        info_path.write_text(json.dumps(_holder()))
        with _database_lock(catalog, home, info_path):
            yield
    finally:
        info_path.unlink(missing_ok=True)
        lock.release()


@contextlib.contextmanager
def _database_lock(catalog: Catalog, home: Path, info_path: Path) -> Iterator[None]:
    """On PostgreSQL, also an advisory lock: homes on several machines may share one catalog."""
    engine = catalog.engine
    if engine.dialect.name != "postgresql":
        yield
        return
    key = zlib.crc32(b"xmodal-indexer")
    with engine.connect() as connection:
        if not connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar():
            raise IndexLockedError(
                "Another indexer holds this PostgreSQL catalog's lock (pg_try_advisory_lock). It was not "
                "disturbed; run again when it has finished."
            )
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            connection.commit()
