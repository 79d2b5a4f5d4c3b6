"""The README's Quick start, run as a new user types it: its install line is complete (apt-get update first), and
its `xmodal` commands, copied from the README, index and search a few real Tux Paint stamps (an SVG among them)
offline. The one change: the stamps folder is a small copy, so the test takes seconds, not minutes."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
STAMPS = Path("/usr/share/tuxpaint/stamps")
SAMPLE = [
    "animals/mammals/cats/lion.png",
    "animals/mammals/cats/tiger.png",
    "seasonal/halloween/blackcat.png",
    "vehicles/bikewheel.svg",
    "town/houses/cartoon/cathedral.svg",
]


def quick_start_commands() -> list[str]:
    section = README.read_text().split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.+?)\n```", section, re.DOTALL)
    assert block is not None, "the Quick start has a bash block"
    return [command.strip() for command in block.group(1).split("&&")]


def test_the_install_line_updates_the_package_lists_first() -> None:
    commands = quick_start_commands()
    installs = [i for i, command in enumerate(commands) if command.startswith("apt-get install")]
    assert installs and "apt-get update" in commands[: installs[0]]  # a fresh Debian has empty package lists
    assert any("libcairo2" in commands[i] for i in installs)  # the SVG stamps need it
    assert any(command.startswith("pip install") and "svg" in command for command in commands)


@pytest.mark.skipif(not STAMPS.is_dir(), reason="apt-get install tuxpaint-stamps-default (.ci/run does)")
def test_the_quick_start_indexes_and_searches_tux_paint_stamps(tmp_path: Path) -> None:
    pytest.importorskip("cairosvg")
    sample = tmp_path / "stamps"
    for name in SAMPLE:
        for source in (STAMPS / name).parent.glob(f"{Path(name).stem}.*"):
            target = sample / source.relative_to(STAMPS)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    xmodal = shutil.which("xmodal", path=str(Path(sys.executable).parent))
    assert xmodal is not None, "the xmodal command is installed with the package"
    env = {**os.environ, "XMODAL_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    env = {key: value for key, value in env.items() if not key.startswith("XMODAL_") or key == "XMODAL_HOME"}
    outputs = []
    for command in (c for c in quick_start_commands() if c.startswith("xmodal ")):
        argv = shlex.split(command.replace(str(STAMPS), str(sample)))
        done = subprocess.run([xmodal, *argv[1:]], env=env, capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        outputs.append(done.stdout + done.stderr)
    indexed, found = outputs
    assert "failed" in indexed and "skipped (unsupported)" in indexed
    assert "bikewheel.svg" not in indexed  # rendered, not skipped or failed
    top = [line for line in found.splitlines() if line.startswith("│ 1 ")]
    assert top and any(name in top[0].lower() for name in ("lion", "tiger", "blackcat", "black cat")), found
