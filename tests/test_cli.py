"""The command line: index and search a folder, tables and JSON, exit codes, model listing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import write_corpus
from xmodal.cli import app, main


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_clip_dir: Path, tiny_clap_dir: Path) -> Path:
    monkeypatch.setenv("XMODAL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XMODAL_CLIP_ENCODER", f"open_clip:local-dir:{tiny_clip_dir}")
    monkeypatch.setenv("XMODAL_CLAP_ENCODER", f"clap:{tiny_clap_dir}")
    monkeypatch.setenv("XMODAL_DEVICE", "cpu")
    monkeypatch.setenv("XMODAL_COLLAPSE_DUPLICATES", "false")  # random-weight encoders make everything alike
    return tmp_path


def test_index_then_search(cli_env: Path) -> None:
    root = write_corpus(cli_env / "corpus", images=4, texts=4)
    runner = CliRunner()
    indexed = runner.invoke(app, ["index", str(root), "--json"])
    assert indexed.exit_code == 0, indexed.output
    assert json.loads(indexed.stdout)["indexed"] == 8

    found = runner.invoke(app, ["search", "river", "-k", "3", "--json"])
    assert found.exit_code == 0, found.output
    assert len(json.loads(found.stdout)["results"]) == 3

    table = runner.invoke(app, ["search", "river", "-k", "2", "--space", "text"])
    assert table.exit_code == 0 and "score" in table.output

    by_image = runner.invoke(app, ["search", "--image", str(root / "image_000.png"), "-k", "1", "--json"])
    assert json.loads(by_image.stdout)["results"][0]["path"] == str(root / "image_000.png")

    steered = runner.invoke(
        app, ["search", "river", "--not", "night", "--where", "extension=txt", "--explain", "-k", "2", "--json"]
    )
    assert steered.exit_code == 0, steered.output
    found_steered = json.loads(steered.stdout)["results"]
    assert all(r["path"].endswith(".txt") for r in found_steered)
    assert all(any(c["weight"] < 0 for c in r["explanation"]) for r in found_steered)

    from tests.conftest import write_audio_corpus

    audio_root = write_audio_corpus(cli_env / "audio", clips=3, texts=0)
    assert runner.invoke(app, ["index", str(audio_root), "--quiet"]).exit_code == 0
    by_audio = runner.invoke(app, ["search", "--audio", str(audio_root / "clip_001.flac"), "-k", "1", "--json"])
    assert by_audio.exit_code == 0, by_audio.output
    assert json.loads(by_audio.stdout)["results"][0]["path"] == str(audio_root / "clip_001.flac")

    stats = runner.invoke(app, ["stats", "--json"])
    assert {s["name"]: s["vectors"] for s in json.loads(stats.stdout)["spaces"]}["clip"] >= 8


def test_failed_files_make_exit_code_1_and_are_listed(cli_env: Path) -> None:
    root = cli_env / "bad"
    root.mkdir()
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = CliRunner().invoke(app, ["index", str(root)])
    assert result.exit_code == 1
    assert "broken.png" in result.output and "1 failed files" in result.output


def test_errors_are_a_message_and_exit_code_2(cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("sys.argv", ["xmodal", "search", "river", "--space", "nope"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    assert "No space named 'nope'" in capsys.readouterr().err


def test_missing_folder_is_exit_code_2(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["xmodal", "index", str(cli_env / "nowhere")])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2


def test_models_list(cli_env: Path) -> None:
    result = CliRunner().invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"cache": str(cli_env / "home" / "models"), "models": []}


def test_serve_runs_uvicorn_with_the_app(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi import FastAPI

    calls: list[tuple[object, str, int]] = []
    monkeypatch.setattr("uvicorn.run", lambda app, host, port: calls.append((app, host, port)))
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert len(calls) == 1 and isinstance(calls[0][0], FastAPI) and calls[0][1:] == ("0.0.0.0", 8123)
