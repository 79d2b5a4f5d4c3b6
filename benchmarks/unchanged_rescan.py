"""How fast a nightly re-run over an unchanged tree goes: files per second, models never loaded.

Writes a tree of small PNG images and short texts, indexes it once, then times a second run in a fresh engine
(open, lock, reconcile, walk, compare with the catalog, finish).

    python benchmarks/unchanged_rescan.py [--files 20000]

Prints a table and writes benchmarks/results/unchanged_rescan.json.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from common import write_result

from xmodal import Engine, Settings

WORDS = ["harbor", "lantern", "meadow", "quarry", "thistle"]  # any short words will do


def write_tree(root: Path, files: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    for number in range(files):
        folder = root / f"{number // 1000:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        if number % 2:
            Image.new("RGB", (16, 16), tuple(rng.randrange(256) for _ in range(3))).save(folder / f"{number}.png")
        else:
            (folder / f"{number}.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(8)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "tree"
        write_tree(root, args.files)
        settings = Settings(home=Path(scratch) / "home")
        with Engine.open(settings=settings) as engine:
            started = time.perf_counter()
            first = engine.index([root])
            first_seconds = time.perf_counter() - started
        started = time.perf_counter()
        with Engine.open(settings=settings) as engine:
            second = engine.index([root])
            loaded = [space.name for space in engine.spaces if space.encoder.loaded]
        seconds = time.perf_counter() - started
    rate = second.scanned / seconds
    print(f"{'files':>7} {'first run s':>12} {'re-run s':>9} {'files/s':>9} {'models loaded':>14}")
    print(f"{second.scanned:>7} {first_seconds:>12.1f} {seconds:>9.2f} {rate:>9.0f} {len(loaded):>14}")
    assert second.unchanged == args.files and first.failed == 0
    target = write_result(
        "unchanged_rescan",
        {
            "files": args.files,
            "first_run_seconds": first_seconds,
            "rerun_seconds": seconds,
            "files_per_second": rate,
            "models_loaded_on_rerun": loaded,
            "rerun_timings": second.timings,
            "command": f"python benchmarks/unchanged_rescan.py --files {args.files}",
        },
        args.out,
    )
    print(f"written to {target}")


if __name__ == "__main__":
    main()
