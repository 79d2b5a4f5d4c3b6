"""`xmodal serve --workers 2` as a user runs it: two processes answer the same port, and both follow an index run
that publishes while they serve (each refreshes its own spaces; nothing is shared but the files)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import write_corpus
from tests.test_cli_startup import _free_port, _wait_ready, text_only_env


def _search(url: str, text: str) -> list[str]:
    body = json.dumps({"text": text, "k": 3, "space": "text"}).encode()
    request = urllib.request.Request(f"{url}/search", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return [Path(r["path"]).name for r in json.loads(answer.read())["results"]]


def _workers(pid: int) -> list[int]:
    """The serving processes uvicorn started under ``pid`` (its multiprocessing children, not the tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    found = []
    for child in map(int, children):
        command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"spawn_main" in command:
            found.append(child)
    return found


def test_two_worker_processes_answer_and_both_see_a_new_publication(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", images=0, texts=3)
    (corpus / "otter.txt").write_text("an otter floats on its back in the kelp")
    env = {**text_only_env(tmp_path / "home"), "XMODAL_SPEECH_MODEL": ""}
    index = [sys.executable, "-m", "xmodal", "index", str(corpus), "--quiet"]
    assert subprocess.run(index, env=env, capture_output=True, timeout=300).returncode == 0
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    serve = [sys.executable, "-m", "xmodal", "serve", "--port", str(port), "--workers", "2"]
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(serve, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        _wait_ready(url, process)
        assert len(_workers(process.pid)) == 2
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: _search(url, "otter"), range(32)))
        assert all(answer[:1] == ["otter.txt"] for answer in answers)

        (corpus / "walrus.txt").write_text("a walrus hauls out on the ice floe")
        assert subprocess.run(index, env=env, capture_output=True, timeout=300).returncode == 0
        # Each worker notices the new manifest on its next query; then every answer has the new item, whichever
        # process took it (which one the kernel hands a connection is not observable here). Asked until 32
        # answers in a row have it; 500 answers at most.
        in_a_row = 0
        for _ in range(500):
            in_a_row = in_a_row + 1 if _search(url, "walrus")[:1] == ["walrus.txt"] else 0
            if in_a_row == 32:
                break
        assert in_a_row == 32, (tmp_path / "serve.log").read_text()[-3000:]
    finally:
        os.kill(process.pid, signal.SIGTERM)  # uvicorn stops its workers
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the whole session: the workers too
            process.wait(timeout=60)
    assert process.returncode in (0, -signal.SIGTERM)
