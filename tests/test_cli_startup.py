"""What `xmodal search` loads (issue 13: every search took 12-16 s, most of it importing open_clip for a space
with nothing in it), and its warm path: the query goes to a running `xmodal serve` of the same home.

The CLI runs as a user runs it, in a subprocess, with ``-X importtime`` telling which modules it imported: the
assertions are on modules, not on seconds (those are in the README, measured on this machine).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import write_corpus
from xmodal.api.discovery import SERVER_FILE, read_announcement
from xmodal.config import Settings
from xmodal.engine import Engine

MODEL_LIBRARIES = {"torch", "open_clip", "transformers", "sentence_transformers", "torchvision"}


@dataclass(frozen=True)
class TextHome:
    """A home of text files whose CLIP and CLAP weights are missing (as on this machine): only the sentence
    model's space and the lexical index hold anything."""

    home: Path
    env: dict[str, str]


def text_only_env(home: Path) -> dict[str, str]:
    """The environment of a CLI run on ``home`` where the CLIP and CLAP weights are missing (as on this machine),
    without OCR: only the sentence model and the lexical index work. The caller's XMODAL_ settings are left out."""
    return {
        **{name: value for name, value in os.environ.items() if not name.startswith("XMODAL_")},
        "XMODAL_HOME": str(home),
        "XMODAL_CLIP_ENCODER": "open_clip:hf-hub:nobody/not-cached-clip",
        "XMODAL_CLAP_ENCODER": "clap:nobody/not-cached-clap",
        "XMODAL_DEVICE": "cpu",
        "XMODAL_OCR": "false",
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "200",
    }


@pytest.fixture(scope="module")
def text_home(tmp_path_factory: pytest.TempPathFactory) -> TextHome:
    root = tmp_path_factory.mktemp("startup")
    env = text_only_env(root / "home")
    corpus = write_corpus(root / "corpus", images=0, texts=4)
    (corpus / "doc_wombat.txt").write_text("a wombat eats grass in the meadow")
    settings = Settings(
        home=root / "home",
        clip_encoder=env["XMODAL_CLIP_ENCODER"],
        clap_encoder=env["XMODAL_CLAP_ENCODER"],
        device="cpu",
        ocr=False,
    )
    with Engine.open(settings=settings) as engine:
        report = engine.index([corpus])
    assert report.indexed == 5 and set(report.spaces_unavailable) == {"clip", "clap"}
    return TextHome(root / "home", env)


def _imported(stderr: str) -> set[str]:
    """The top-level packages ``-X importtime`` says were imported."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def _xmodal(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "xmodal", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_importing_the_cli_loads_no_model_library() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import xmodal.cli"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    imported = _imported(done.stderr)
    assert "xmodal" in imported
    assert not imported & MODEL_LIBRARIES, imported & MODEL_LIBRARIES


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    """Poll /readyz (the server's readiness endpoint) until it answers 200."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"xmodal serve exited at start with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)  # between polls of the readiness endpoint, not as synchronisation
    raise RuntimeError("xmodal serve did not become ready")


@pytest.fixture
def server(text_home: TextHome, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "xmodal", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=text_home.env,
            stdout=log,
            stderr=log,
        )
    try:
        _wait_ready(url, process)
        yield url
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    assert not (text_home.home / SERVER_FILE).exists()  # a server that stopped is not announced any more


def _server_search(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        f"{url}/search", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


def test_search_asks_the_running_server_of_the_home(text_home: TextHome, server: str) -> None:
    announced = read_announcement(text_home.home)
    assert announced is not None and announced.url == server

    done = _xmodal(text_home.env, "search", "river", "--not", "night", "-k", "3", "--explain", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout)
    assert not _imported(done.stderr) & MODEL_LIBRARIES  # the server embedded the query: no model loaded here

    expected = _server_search(
        server, {"text": "river", "parts": [{"text": "night", "weight": -1}], "k": 3, "explain": True}
    )
    assert [r["id"] for r in answer["results"]] == [r["id"] for r in expected["results"]]  # type: ignore[index]
    assert [r["score"] for r in answer["results"]] == [r["score"] for r in expected["results"]]  # type: ignore[index]
    assert answer["next_cursor"] == expected["next_cursor"]
    assert "content_url" not in answer["results"][0]  # printed as a local search prints it

    local = _xmodal(text_home.env, "search", "river", "--not", "night", "-k", "3", "--explain", "--json", "--no-server")
    assert local.returncode == 0, local.stderr[-3000:]
    assert json.loads(local.stdout) == answer  # --no-server: this process searched, and printed the same answer
    imported = _imported(local.stderr)
    assert "sentence_transformers" in imported  # the model of the text space, which holds vectors
    assert "open_clip" not in imported  # CLIP's space holds nothing: neither its model nor open_clip is loaded
    assert answer["spaces_unavailable"] == {}  # so there is no missing-weights line to print either

    table = _xmodal(text_home.env, "search", "wombat", "-k", "1")
    assert table.returncode == 0 and "doc_wombat.txt" in table.stdout


def test_an_announcement_left_by_a_dead_server_is_ignored(text_home: TextHome) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = text_home.home / SERVER_FILE
    stale.write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": int(dead.stdout), "host": socket.gethostname()}))
    try:
        done = _xmodal(text_home.env, "search", "wombat", "-k", "1", "--space", "lexical", "--json")
    finally:
        stale.unlink()
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if not line.startswith("import time:")] == []  # silently
    assert json.loads(done.stdout)["results"][0]["path"].endswith("doc_wombat.txt")
    assert not _imported(done.stderr) & MODEL_LIBRARIES  # the lexical space needs no model


def test_the_announcement_names_a_reachable_url_and_goes_with_its_server(tmp_path: Path) -> None:
    from xmodal.api.discovery import announce, loopback_url, running_server

    assert loopback_url("0.0.0.0", 8000) == "http://127.0.0.1:8000"
    assert loopback_url("::", 8000) == "http://[::1]:8000"
    assert loopback_url("192.168.1.5", 80) == "http://192.168.1.5:80"
    with announce(tmp_path / "home", "http://127.0.0.1:8000") as me:
        assert running_server(tmp_path / "home") == me and me.pid == os.getpid()
    assert running_server(tmp_path / "home") is None and not (tmp_path / "home" / SERVER_FILE).exists()


def test_the_server_is_asked_exactly_what_was_typed_or_not_at_all(tmp_path: Path) -> None:
    from xmodal.cli import SearchArguments, server_request

    image = tmp_path / "q.png"
    image.write_bytes(b"\x89PNG not really")
    typed = SearchArguments(
        text="river", texts=["boat"], images=[image], audios=[], negatives=["night"], like=[7],
        where=["extension=txt", "camera=a=b"], k=3, space=None, modality=["text"], cursor=None, min_score=None,
        fusion=None, diversity=0.5, explain=True,
    )  # fmt: skip
    request = server_request(typed)
    assert request is not None
    assert request["parts"] == [
        {"text": "boat"},
        {"image": "iVBORyBub3QgcmVhbGx5"},
        {"text": "night", "weight": -1.0},
        {"item": 7},
    ]  # in the order the local search gives them, so their labels (text#1, image#2, ...) are the same
    assert request["where"] == {"extension": "txt", "camera": "a=b"} and request["diversity"] == 0.5
    assert "cursor" not in request and "min_score" not in request
    from dataclasses import replace

    assert server_request(replace(typed, where=["extension"])) is None  # the local search says what is wrong
    assert server_request(replace(typed, where=["a=1", "a=2"])) is None
    assert server_request(replace(typed, min_score=float("nan"))) is None
    assert server_request(replace(typed, images=[tmp_path / "missing.png"])) is None


def test_an_unchanged_index_run_without_clip_weights_imports_no_model_library(
    text_home: TextHome, tmp_path: Path
) -> None:
    """With the default hub model for `clip` and nothing downloaded (an offline machine), a nightly run over an
    unchanged folder asks whether the weights have become reachable: that must not import open_clip (10 s of the
    12 s such a run took over Tux Paint's stamps)."""
    env = {
        **text_home.env,
        "XMODAL_HOME": str(tmp_path / "home"),
        "XMODAL_CLIP_ENCODER": "open_clip:ViT-B-32/laion2b_s34b_b79k",
    }
    corpus = write_corpus(tmp_path / "corpus", images=0, texts=3)
    first = _xmodal(env, "index", str(corpus), "--quiet")
    assert first.returncode == 0, first.stderr[-2000:]
    again = _xmodal(env, "index", str(corpus), "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["unchanged"] == 3
    imported = _imported(again.stderr)
    assert not imported & MODEL_LIBRARIES, imported & MODEL_LIBRARIES


def test_a_catalog_from_a_newer_xmodal_is_refused_with_what_to_do(tmp_path: Path) -> None:
    """A home a newer xmodal has migrated past what this one knows: one line saying so, a non-zero exit, no
    traceback, and the catalog left as the newer version wrote it."""
    from sqlalchemy import create_engine, text

    from xmodal.store.catalog import Catalog

    database = tmp_path / "home" / "catalog.db"
    Catalog.open(f"sqlite:///{database}").close()
    with create_engine(f"sqlite:///{database}").begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    env = text_only_env(tmp_path / "home")
    for command in (["stats"], ["search", "wombat"]):
        done = _xmodal(env, *command)
        assert done.returncode != 0
        assert "written by a newer xmodal" in done.stderr and "pip install -U xmodal" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    with create_engine(f"sqlite:///{database}").connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "9999"
