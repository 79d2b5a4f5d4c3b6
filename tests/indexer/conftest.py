"""This package's tests run on both catalogs: SQLite, and PostgreSQL when XMODAL_TEST_POSTGRES_URL is set.

``s3_server`` is a real S3 API for the bucket tests: moto's server, started on a free loopback port and stopped
by its pid; its request log counts what the indexer read.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import settings_on_each_catalog
from xmodal.config import Settings


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path, tiny_clip_dir: Path, tiny_clap_dir: Path) -> Settings:
    return settings_on_each_catalog(request, tmp_path / "home", tiny_clip_dir, tiny_clap_dir)


S3_SECRET = f"xmodal-test-secret-{uuid.uuid4().hex}"


@dataclass
class S3Server:
    endpoint: str
    log: Path

    def requests(self) -> list[tuple[str, str]]:
        """(method, target) of every request the server answered so far."""
        text = self.log.read_text(errors="replace")
        return re.findall(r'"(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP/1\.1', text)

    def object_reads(self, bucket: str, since: int = 0) -> int:
        """GETs and HEADs of objects (not listings) in ``bucket``, after the first ``since`` requests."""
        return sum(
            1
            for method, target in self.requests()[since:]
            if method in {"GET", "HEAD"} and target.startswith(f"/{bucket}/") and "list-type" not in target
        )

    def listings(self, bucket: str, since: int = 0) -> int:
        return sum(1 for _, target in self.requests()[since:] if target.startswith(f"/{bucket}?list-type"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 (a free port), with the AWS environment a user would set; stopped by pid."""
    pytest.importorskip("moto.server", reason="the cloud extra is not installed: pip install 'xmodal[cloud]'")
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "requests.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
        )
    endpoint = f"http://127.0.0.1:{port}"
    environment = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "xmodal-test-key",
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        _wait_until_listening(port, process)
        yield S3Server(endpoint, log)
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _wait_until_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    """Connect until the server accepts (a readiness check on the socket, not a sleep)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("moto's server exited at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("moto's server did not start listening")


GCS_BUCKET = "xmodal-test"


@dataclass
class GcsServer:
    """A Google Cloud Storage JSON API (gcp-storage-emulator) and its request log."""

    endpoint: str
    log: Path

    def requests(self) -> list[tuple[str, str]]:
        text = self.log.read_text(errors="replace")
        return re.findall(r'"(GET|HEAD|PUT|POST|DELETE|PATCH) (\S+) HTTP/1\.1', text)

    def object_reads(self, since: int = 0) -> int:
        """Reads of an object's metadata or bytes (not listings), after the first ``since`` requests."""
        return sum(
            1
            for method, target in self.requests()[since:]
            if method == "GET" and re.match(rf"/(download/)?storage/v1/b/{GCS_BUCKET}/o/", target)
        )

    def listings(self, since: int = 0) -> int:
        return sum(1 for _, target in self.requests()[since:] if target.startswith(f"/storage/v1/b/{GCS_BUCKET}/o?"))


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsServer]:
    """gcp-storage-emulator on 127.0.0.1 (a free port, in memory, one bucket), reached by gcsfs through
    ``STORAGE_EMULATOR_HOST`` as a user's client reaches an emulator; stopped by its pid."""
    if importlib.util.find_spec("gcsfs") is None:  # not imported: it picks its class from the environment below
        pytest.skip("gs:// needs the gcs extra: pip install 'xmodal[gcs]'")
    pytest.importorskip("gcp_storage_emulator", reason="the dev extra is not installed: pip install -e '.[dev]'")
    port = _free_port()
    log = tmp_path_factory.mktemp("gcs") / "requests.log"
    with log.open("wb") as out:
        command = [sys.executable, "-m", "gcp_storage_emulator", "start", "-H", "127.0.0.1", "--port", str(port),
                   "--in-memory", "--default-bucket", GCS_BUCKET]  # fmt: skip
        process = subprocess.Popen(command, stdout=out, stderr=out)
    endpoint = f"http://127.0.0.1:{port}"
    # gcsfs's newer file system asks a gRPC service for the bucket's type, which no emulator answers
    environment = {"STORAGE_EMULATOR_HOST": endpoint, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        _wait_until_listening(port, process)
        yield GcsServer(endpoint, log)
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
