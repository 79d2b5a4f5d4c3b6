"""Fuzz the OpenAPI schema with Schemathesis's CLI against a live server: no request may end in a 500.

The server runs without an API key, so writes and admin calls are refused (403) whatever is generated; with a
key, a generated `/admin/index` path could really index a folder of this machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import live_server, write_corpus
from xmodal.api.app import create_app
from xmodal.engine import Engine

SCHEMATHESIS = shutil.which("schemathesis", path=str(Path(sys.executable).parent))


@pytest.fixture(params=["sqlite"])  # fuzzing finds HTTP-layer faults; one catalog is enough
def settings(request: pytest.FixtureRequest, settings: object) -> object:
    return settings


@pytest.fixture
def server(engine: Engine, tmp_path: Path) -> Iterator[str]:
    engine.index([write_corpus(tmp_path / "corpus", images=4, texts=4)])
    assert engine.settings.api_key is None
    with live_server(create_app(engine=engine)) as base:
        yield base


@pytest.mark.skipif(SCHEMATHESIS is None, reason="pip install schemathesis (the dev extra)")
def test_no_generated_request_is_a_server_error(server: str, tmp_path: Path) -> None:
    command = [
        str(SCHEMATHESIS), "run", f"{server}/openapi.json",
        "--checks", "not_a_server_error",
        "--max-examples", "40",
        "--seed", "1",
        "--suppress-health-check", "all",
        "--report", "junit", "--report-junit-path", str(tmp_path / "fuzz.xml"),
    ]  # fmt: skip
    env = {**os.environ, "SCHEMATHESIS_HOOKS": ""}
    run = subprocess.run(  # in tmp_path: Schemathesis keeps a cache of crashes in its working folder
        command, capture_output=True, text=True, env=env, timeout=600, check=False, cwd=tmp_path
    )
    report = (tmp_path / "fuzz.xml").read_text() if (tmp_path / "fuzz.xml").is_file() else ""
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "<testsuite" in report and "<failure" not in report
    assert "/search" in run.stdout and "/knn-service" in run.stdout  # every operation was exercised
