"""Is fusion worth it? Text -> speech Recall@K on the Tux Paint stamps for the `text` space alone, the `lexical`
space alone, and both fused (calibrated and reciprocal-rank fusion).

Speech is transcribed offline (faster-whisper tiny.en); the written captions are the queries; a query is a hit at
K when its own spoken reading is among the top K audio results.

    python benchmarks/fusion_recall.py [--stamps /usr/share/tuxpaint/stamps]

Prints a table and writes benchmarks/results/fusion_recall.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import recall_at, write_result
from tuxpaint import DEFAULT_STAMPS, link_corpus

from xmodal import Engine, Settings

RUNS: dict[str, dict[str, Any]] = {
    "text only": {"space": "text"},
    "lexical only": {"space": "lexical"},
    "fused (calibrated)": {"fusion": "calibrated"},
    "fused (rrf)": {"fusion": "rrf"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stamps", type=Path, default=DEFAULT_STAMPS)
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: benchmarks/results/)")
    args = parser.parse_args()
    if not args.stamps.is_dir():
        sys.exit(f"{args.stamps} not found: apt-get install tuxpaint-stamps-default")

    table: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        corpus = Path(scratch) / "corpus"
        names, effects = link_corpus(args.stamps, corpus)
        with Engine.open(settings=Settings(home=Path(scratch) / "home")) as engine:
            engine.index([corpus])
            searched: dict[str, list[str]] = {}
            for label, options in RUNS.items():
                ranks: list[int | None] = []
                for name, caption in names.items():
                    response = engine.query(engine.build_query(text=caption, k=10, modalities=["audio"], **options))
                    found = [Path(r.path).name for r in response.results]
                    ranks.append(found.index(name) + 1 if name in found else None)
                    searched[label] = response.spaces_searched
                table[label] = {f"R@{k}": recall_at(ranks, k) for k in (1, 5, 10)}

    print(f"{'run':<20} {'spaces':<22} {'R@1':>6} {'R@5':>6} {'R@10':>6}")
    for label, scores in table.items():
        spaces = ",".join(sorted(searched[label]))
        print(f"{label:<20} {spaces:<22} {scores['R@1']:>6.3f} {scores['R@5']:>6.3f} {scores['R@10']:>6.3f}")
    target = write_result(
        "fusion_recall",
        {
            "queries": len(names),
            "distractor_effects": effects,
            "runs": {label: {"spaces": sorted(searched[label]), **scores} for label, scores in table.items()},
            "command": "python benchmarks/fusion_recall.py",
        },
        args.out,
    )
    print(f"written to {target}")


if __name__ == "__main__":
    main()
