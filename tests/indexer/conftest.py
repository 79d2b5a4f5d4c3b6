"""This package's tests run on both catalogs: SQLite, and PostgreSQL when XMODAL_TEST_POSTGRES_URL is set.

``s3_server`` is a real S3 API for the bucket tests: moto's server, started on a free loopback port and stopped
by its pid; its request log counts what the indexer read.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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
    with _environment(environment), _stopped_at_the_end(process):
        _wait_until_listening(port, process)
        yield S3Server(endpoint, log)


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """The variables set for the block (a store's client reads them), as they were after it."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in values.items():
            patch.setenv(name, value)
        yield


@contextmanager
def _stopped_at_the_end(process: subprocess.Popen[bytes]) -> Iterator[None]:
    """Stop the server process by its pid after the block: SIGTERM, then SIGKILL if it does not go (node may not)."""
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_until_listening(port: int, process: subprocess.Popen[bytes], name: str = "moto's server") -> None:
    """Connect until the server accepts (a readiness check on the socket, not a sleep)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not start listening")


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
    with _environment(environment), _stopped_at_the_end(process):
        _wait_until_listening(port, process, "gcp-storage-emulator")
        yield GcsServer(endpoint, log)


AZURE_CONTAINER = "xmodal-test"
# Azurite's well-known development account (published in its documentation; it opens nothing but the emulator)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class AzuriteServer:
    """Azure Blob Storage's emulator (Azurite) and its debug log, which names every request it answered."""

    endpoint: str
    log: Path

    def requests(self) -> list[tuple[str, str]]:
        """(method, path and query under the account) of every request logged so far."""
        text = self.log.read_text(errors="replace")
        return re.findall(rf"RequestMethod=(\w+) RequestURL=https?://[^/]+/{AZURITE_ACCOUNT}/(\S+)", text)

    def settled(self) -> int:
        """The number of requests logged once a marker request of this call shows in the log (the log is written
        asynchronously): counts taken after it include every request made before it."""
        import fsspec

        marker = f"{AZURE_CONTAINER}/.marker-{uuid.uuid4().hex}"
        fsspec.filesystem("az", use_listings_cache=False).exists(marker)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = self.requests()
            if any(marker in target for _, target in found):
                return len(found)
            time.sleep(0.02)  # polling the log file for the marker, not timing the test
        raise RuntimeError("Azurite did not log the marker request")

    def object_reads(self, under: str, since: int = 0) -> int:
        """GETs and HEADs of blobs below the folder ``under`` (not listings, nor adlfs's probe of the folder's own
        name) after the first ``since`` requests."""
        return sum(
            1
            for method, target in self.requests()[since:]
            if method in {"GET", "HEAD"} and target.startswith(f"{under}/") and "comp=list" not in target
        )

    def listings(self, since: int = 0) -> int:
        return sum(1 for _, target in self.requests()[since:] if "comp=list" in target)


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """Azurite's blob service on 127.0.0.1 (a free port, in memory), reached by adlfs through
    ``AZURE_STORAGE_CONNECTION_STRING`` as a user's client reaches a storage account; stopped by its pid."""
    pytest.importorskip("adlfs", reason="az:// needs adlfs: pip install 'xmodal[azure]'")
    command = os.environ.get("XMODAL_TEST_AZURITE") or shutil.which("azurite-blob")
    if not command:
        pytest.skip("needs Azurite: npm install azurite, then XMODAL_TEST_AZURITE=.../azurite-blob (.ci/run does)")
    port = _free_port()
    folder = tmp_path_factory.mktemp("azurite")
    log = folder / "debug.log"
    with (folder / "out.log").open("wb") as out:
        process = subprocess.Popen(
            [command, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence", "--silent",
             "--skipApiVersionCheck", "--loose", "--debug", str(log)],
            stdout=out, stderr=out, cwd=folder,
        )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    environment = {
        "AZURE_STORAGE_CONNECTION_STRING": f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
    }
    with _environment(environment), _stopped_at_the_end(process):
        _wait_until_listening(port, process, "Azurite")
        import fsspec

        fsspec.filesystem("az", use_listings_cache=False).mkdir(AZURE_CONTAINER)
        yield AzuriteServer(endpoint, log)
