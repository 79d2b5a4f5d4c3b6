"""How ``xmodal search`` finds a running ``xmodal serve`` of the same home.

While it runs, the server keeps ``HOME/server.json``: its URL, pid and host. A CLI on the same machine that finds
the file, with that process alive, sends its query there instead of loading the models itself. The file is
written atomically and removed when the server stops; one left behind by a killed server names a dead pid and is
ignored. Standard library only: the CLI reads it before deciding to import anything heavy.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SERVER_FILE = "server.json"


@dataclass(frozen=True, slots=True)
class ServerAnnouncement:
    """A server's own word on where it listens."""

    url: str
    pid: int
    host: str


def loopback_url(host: str, port: int) -> str:
    """The URL a client on this machine uses for a server bound to ``host:port`` (a wildcard address is reached
    through the loopback interface)."""
    if host in {"", "0.0.0.0"}:
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    return f"http://{host}:{port}"


@contextlib.contextmanager
def announce(home: Path, url: str) -> Iterator[ServerAnnouncement]:
    """Keep ``HOME/server.json`` naming this process at ``url`` for the block; removed after it (unless another
    server on the same home has announced itself since)."""
    home.mkdir(parents=True, exist_ok=True)
    me = ServerAnnouncement(url=url, pid=os.getpid(), host=socket.gethostname())
    path = home / SERVER_FILE
    staged = home / f".{SERVER_FILE}.{uuid.uuid4().hex}"
    staged.write_text(json.dumps({"url": me.url, "pid": me.pid, "host": me.host}))
    os.replace(staged, path)  # readers see the old file or the new one, never half of one
    try:
        yield me
    finally:
        if read_announcement(home) == me:
            path.unlink(missing_ok=True)


def read_announcement(home: Path) -> ServerAnnouncement | None:
    """What ``HOME/server.json`` says, or ``None`` when there is none or it cannot be read."""
    try:
        data = json.loads((home / SERVER_FILE).read_text())
        return ServerAnnouncement(url=str(data["url"]), pid=int(data["pid"]), host=str(data["host"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_server(home: Path) -> ServerAnnouncement | None:
    """The server announced in ``home`` when it runs on this machine and its process is alive, else ``None``."""
    found = read_announcement(home)
    if found is None or found.host != socket.gethostname() or not _alive(found.pid):
        return None
    return found


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, run by another user
        return True
    return True
