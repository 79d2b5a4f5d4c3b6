"""`xmodal spaces switch` / `rollback` from the command line: the nightly `index --max-items` runs build the new
version, `stats` shows both versions and the progress, errors say what to do."""

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
    monkeypatch.setenv("XMODAL_OCR", "false")
    monkeypatch.setenv("XMODAL_COLLAPSE_DUPLICATES", "false")
    return tmp_path


def _exit_code(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr("sys.argv", ["xmodal", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return int(exited.value.code or 0)


def test_switch_over_partial_runs_then_rollback(
    cli_env: Path, other_tiny_clip_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = CliRunner()
    root = write_corpus(cli_env / "corpus", images=4, texts=2)
    assert runner.invoke(app, ["index", str(root), "-q"]).exit_code == 0
    new = f"open_clip:local-dir:{other_tiny_clip_dir}"

    started = runner.invoke(app, ["spaces", "switch", "clip", "--to", new])
    assert started.exit_code == 0, started.output
    assert "version 2 (shadow)" in started.output and "embed the 6 remaining items" in started.output

    first = runner.invoke(app, ["index", str(root), "--max-items", "4"])
    assert first.exit_code == 0, first.output
    assert "new version 2: 4 items embedded, 2 left" in first.output
    stats = runner.invoke(app, ["stats"])
    assert "clip version 2 (shadow)" in stats.output and "67% of the items built" in stats.output
    listed = json.loads(runner.invoke(app, ["stats", "--json"]).stdout)
    clip = next(space for space in listed["spaces"] if space["name"] == "clip")
    assert clip["version"] == 1 and [v["role"] for v in clip["versions"]] == ["current", "shadow"]

    # a second, different switch while one is under way is refused with what to do; so is promoting nothing
    assert _exit_code(monkeypatch, "spaces", "switch", "clip", "--to", "open_clip:ViT-B-32/laion2b_s34b_b79k") == 2
    assert "xmodal spaces switch clip --cancel" in capsys.readouterr().err
    assert _exit_code(monkeypatch, "spaces", "rollback", "clip") == 2
    assert "no previous version" in capsys.readouterr().err

    promoted = runner.invoke(app, ["spaces", "switch", "clip", "--promote", "--json"])  # before it covers all
    assert promoted.exit_code == 0, promoted.output
    state = json.loads(promoted.stdout)
    assert [(v["number"], v["role"]) for v in state["versions"]] == [(2, "current"), (1, "previous")]
    searched = json.loads(runner.invoke(app, ["search", "river", "--space", "clip", "-k", "10", "--json"]).stdout)
    assert len(searched["results"]) == 4  # the new version answers with what it has: 4 of 6 items

    rolled = json.loads(runner.invoke(app, ["spaces", "rollback", "clip", "--json"]).stdout)
    assert [(v["number"], v["role"]) for v in rolled["versions"]] == [(1, "current"), (2, "previous")]
    again = json.loads(runner.invoke(app, ["search", "river", "--space", "clip", "-k", "10", "--json"]).stdout)
    assert len(again["results"]) == 6

    forgot = runner.invoke(app, ["spaces", "switch", "clip", "--forget-old"])
    assert forgot.exit_code == 0 and "no rollback after this" in forgot.output
    assert not (cli_env / "home" / "spaces" / "clip" / "v2").exists()
    listed = json.loads(runner.invoke(app, ["stats", "--json"]).stdout)
    clip = next(space for space in listed["spaces"] if space["name"] == "clip")
    assert [(v["number"], v["role"]) for v in clip["versions"]] == [(1, "current")]
