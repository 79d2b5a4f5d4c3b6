"""Every benchmark's quick version, one after another, in under 10 minutes on a 2-core CPU.

    python benchmarks/run_all.py      # results in benchmarks/results/quick/, a summary in quick/run_all.json

Each script prints its own table; this prints how long each took and whether it finished. The full-size runs
(the numbers in the README) are the scripts without --quick / with their default sizes.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, write_result

HERE = Path(__file__).resolve().parent
QUICK = RESULTS / "quick"
# (script, arguments): small sizes, same code paths as the full runs
SUITE: list[tuple[str, list[str]]] = [
    ("ann_recall.py", ["--quick"]),
    ("pipeline_throughput.py", ["--images", "100"]),
    ("query_latency.py", ["--quick"]),
    ("unchanged_rescan.py", ["--files", "5000"]),
    ("fusion_overhead.py", ["--items", "10000", "--queries", "20"]),
    ("fusion_recall.py", []),
]


def main() -> None:
    QUICK.mkdir(parents=True, exist_ok=True)
    rows = []
    started_all = time.perf_counter()
    for script, arguments in SUITE:
        out = QUICK / f"{script.removesuffix('.py')}.json"
        print(f"\n=== {script} {' '.join(arguments)}", flush=True)
        started = time.perf_counter()
        run = subprocess.run([sys.executable, str(HERE / script), *arguments, "--out", str(out)], cwd=HERE, check=False)
        rows.append({"script": script, "arguments": arguments, "seconds": time.perf_counter() - started,
                     "exit_code": run.returncode, "result": str(out)})  # fmt: skip
    total = time.perf_counter() - started_all
    print(f"\n{'benchmark':26} {'seconds':>8} {'exit':>5}")
    for row in rows:
        print(f"{row['script']:26} {row['seconds']:8.1f} {row['exit_code']:>5}")
    print(f"{'total':26} {total:8.1f}")
    path = write_result("run_all", {"total_seconds": total, "runs": rows}, QUICK / "run_all.json")
    print(f"wrote {path}")
    sys.exit(max(row["exit_code"] for row in rows))


if __name__ == "__main__":
    main()
