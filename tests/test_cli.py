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
    (cli_env / "home").mkdir()
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
    listed = json.loads(result.stdout)
    assert listed["cache"] == str(cli_env / "home" / "models") and listed["models"] == []


def test_serve_runs_uvicorn_with_the_app(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi import FastAPI

    calls: list[tuple[object, str, int]] = []
    monkeypatch.setattr("uvicorn.run", lambda app, host, port: calls.append((app, host, port)))
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert len(calls) == 1 and isinstance(calls[0][0], FastAPI) and calls[0][1:] == ("0.0.0.0", 8123)


# What a new user met in the first hour (issue 13) ------------------------------------------------------------


def _run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``xmodal ARGS`` through the console entry point (logging and error handling as a user gets them)."""
    monkeypatch.setattr("sys.argv", ["xmodal", *args])
    code = 0
    try:
        main()
    except SystemExit as exited:
        code = int(exited.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_brackets_in_captions_and_paths_are_shown_as_they_are(cli_env: Path) -> None:
    root = cli_env / "corpus"
    root.mkdir()
    (root / "note[red]x.txt").write_text("river [/red] bank at night")
    (root / "plain.txt").write_text("river and mountain")
    runner = CliRunner()
    assert runner.invoke(app, ["index", str(root), "--quiet"]).exit_code == 0
    found = runner.invoke(app, ["search", "river", "--space", "text", "-k", "5"], terminal_width=300)
    assert found.exit_code == 0, found.output
    assert "note[red]x.txt" in found.output and "[/red] bank" in found.output


def test_ray_works_bare_at_the_end_and_before_other_options(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xmodal.engine import Engine
    from xmodal.indexer.runner import IndexReport

    calls: list[tuple[str | None, str]] = []

    def fake_index(self: Engine, paths: list[Path], **options: object) -> IndexReport:
        calls.append((options["ray_address"], str(self.settings.home)))  # type: ignore[arg-type]
        return IndexReport()

    monkeypatch.setattr(Engine, "index", fake_index)
    data = cli_env / "data"
    data.mkdir()
    runner = CliRunner()
    assert runner.invoke(app, ["index", str(data), "--ray"]).exit_code == 0  # as the README writes it
    other = cli_env / "other-home"
    assert runner.invoke(app, ["index", "--ray", "--home", str(other), str(data)]).exit_code == 0
    assert runner.invoke(app, ["index", str(data), "--ray-address", "auto"]).exit_code == 0
    assert runner.invoke(app, ["index", str(data)]).exit_code == 0
    assert calls == [
        ("local", str(cli_env / "home")),
        ("local", str(other)),
        ("auto", str(cli_env / "home")),
        (None, str(cli_env / "home")),
    ]


def test_known_failures_stay_visible_on_the_next_run_and_quiet_prints_only_them(cli_env: Path) -> None:
    root = cli_env / "bad"
    root.mkdir()
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (root / "fine.txt").write_text("a fine river")
    runner = CliRunner()
    assert runner.invoke(app, ["index", str(root), "--quiet"]).exit_code == 1
    again = runner.invoke(app, ["index", str(root), "--json"])
    assert again.exit_code == 1  # a nightly job keeps seeing the failure
    report = json.loads(again.stdout)
    assert report["still_failing"] == 1 and report["unchanged"] == 2
    assert [path for path, _ in report["failures"]] == [str(root / "broken.png")]
    quiet = runner.invoke(app, ["index", str(root), "--quiet"])
    assert quiet.exit_code == 1
    assert "broken.png" in quiet.output and "earlier run" in quiet.output
    assert "Index run" not in quiet.output and "scanned" not in quiet.output  # only the failures
    table = runner.invoke(app, ["index", str(root)])
    assert "failed before, unchanged" in table.output and "1 failed files" in table.output


def test_the_timing_line_says_what_is_wall_time() -> None:
    from xmodal.cli import timing_line

    line = timing_line({"scan_s": 0.5, "decode_s": 356.7, "encode_s": 100.0, "write_s": 2.0, "total_s": 183.2}, 4)
    assert line == "time: total 183.2s wall (scan 0.5s, encode 100.0s, write 2.0s); decode 356.7s summed over 4 threads"


def test_version(cli_env: Path) -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"xmodal {version('xmodal')}"


def test_a_mistyped_home_is_an_error_not_a_new_home(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = cli_env / "hoem"
    for command in (["stats"], ["search", "river"]):
        code, output = _run_main(monkeypatch, capsys, *command, "--home", str(typo))
        assert code == 2 and "No xmodal home at" in output
    assert not typo.exists()


def test_search_json_names_the_item_id_as_http_does(cli_env: Path) -> None:
    root = write_corpus(cli_env / "corpus", images=0, texts=3)
    runner = CliRunner()
    assert runner.invoke(app, ["index", str(root), "--quiet"]).exit_code == 0
    found = json.loads(runner.invoke(app, ["search", "river", "-k", "2", "--json"]).stdout)
    assert all("id" in result and "item_id" not in result for result in found["results"])
    assert found["parts_ignored"] == {}


def test_models_list_shows_the_models_in_use(cli_env: Path, tiny_clip_dir: Path) -> None:
    result = CliRunner().invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0
    in_use = {model["used_by"]: model for model in json.loads(result.stdout)["in_use"]}
    assert in_use["clip"] == {"used_by": "clip", "spec": f"open_clip:local-dir:{tiny_clip_dir}", "weights": "ready"}
    assert in_use["text"]["weights"] == "ready"  # an installed package: no download, yet in use
    table = CliRunner().invoke(app, ["models", "list"], terminal_width=300)
    assert "models in use" in table.output and "no downloaded models" not in table.output


def test_models_pull_network_failure_is_exit_1(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xmodal.errors import WeightsUnavailableError

    def offline(spec: str, settings: object) -> str:
        raise WeightsUnavailableError(spec, "/cache", "the hub is unreachable (offline)")

    monkeypatch.setattr("xmodal.encoders.weights.pull", offline)
    result = CliRunner().invoke(app, ["models", "pull", "open_clip:ViT-B-32"])
    assert result.exit_code == 1, result.output
    assert "hub is unreachable" in result.output


def test_unavailable_weights_are_one_short_line_with_the_remedy(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XMODAL_CLIP_ENCODER", "open_clip:hf-hub:nobody/not-cached-clip")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = write_corpus(cli_env / "corpus", images=1, texts=2)
    monkeypatch.setenv("COLUMNS", "400")  # one line per message, as in a wide terminal or a log file
    code, output = _run_main(monkeypatch, capsys, "index", str(root))
    assert code == 0, output
    said = [line for line in output.splitlines() if "not-cached-clip" in line]
    assert len(said) == 1 and "was not indexed" in said[0], output  # once, on one line
    assert "fix: xmodal models pull open_clip:hf-hub:nobody/not-cached-clip" in said[0]
    assert "To fix it, do one of these" not in output
    code, output = _run_main(monkeypatch, capsys, "search", "river", "--image", str(root / "image_000.png"))
    assert code == 0, output
    said = [line for line in output.splitlines() if "not-cached-clip" in line]
    assert len(said) == 2, output  # the space line, and the image part it left unused
    assert "query part 'image#" in output and "not used" in output


def test_transcription_is_announced_with_an_estimate_and_max_items_is_honoured(cli_env: Path) -> None:
    from tests.conftest import write_audio_corpus

    audio_root = write_audio_corpus(cli_env / "audio", clips=3, texts=0)
    result = CliRunner().invoke(app, ["index", str(audio_root), "--max-items", "1"], terminal_width=300)
    assert result.exit_code == 0, result.output
    assert "1 audio files will be transcribed" in result.output and "left 2 files for later runs" in result.output
    assert "deferred (--max-items)" in result.output
