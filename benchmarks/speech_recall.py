"""Text -> speech recall on real data: Tux Paint's spoken stamp descriptions, found by their written captions.

Each English reading (``*_desc.ogg``) is indexed with the stamps' sound effects as distractors; speech goes
through faster-whisper (tiny.en, offline) into the `text` space. Each stamp's written caption is a query; a query
is a hit at K when its own reading is in the top K audio results.

    python benchmarks/speech_recall.py [--stamps /usr/share/tuxpaint/stamps]

Prints a table and writes benchmarks/results/speech_recall.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import recall_at, write_result
from tuxpaint import DEFAULT_STAMPS, link_corpus

from xmodal import Engine, Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stamps", type=Path, default=DEFAULT_STAMPS)
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: benchmarks/results/)")
    args = parser.parse_args()
    if not args.stamps.is_dir():
        sys.exit(f"{args.stamps} not found: apt-get install tuxpaint-stamps-default")

    with tempfile.TemporaryDirectory() as scratch:
        corpus = Path(scratch) / "corpus"
        names, effects = link_corpus(args.stamps, corpus)
        with Engine.open(settings=Settings(home=Path(scratch) / "home")) as engine:
            started = time.perf_counter()
            report = engine.index([corpus])
            index_seconds = time.perf_counter() - started
            ranks: list[int | None] = []
            started = time.perf_counter()
            for name, caption in names.items():
                results = engine.search(caption, k=10, space="text", modalities=["audio"])
                found = [Path(r.path).name for r in results]
                ranks.append(found.index(name) + 1 if name in found else None)
            query_ms = (time.perf_counter() - started) / max(1, len(names)) * 1000
            transcribed = sum(1 for r in engine.search("a", k=1000, space="text", modalities=["audio"]))

    scores = {f"R@{k}": recall_at(ranks, k) for k in (1, 5, 10)}
    header = ("queries", "items", "with transcript", "R@1", "R@5", "R@10", "index s", "ms/query")
    print(" ".join(f"{name:>{width}}" for name, width in zip(header, (8, 6, 16, 6, 6, 6, 8, 9), strict=True)))
    print(
        f"{len(ranks):>8} {report.indexed:>6} {transcribed:>16} {scores['R@1']:>6.3f} {scores['R@5']:>6.3f} "
        f"{scores['R@10']:>6.3f} {index_seconds:>8.1f} {query_ms:>9.1f}"
    )
    target = write_result(
        "speech_recall",
        {
            "queries": len(ranks),
            "items": report.indexed,
            "speech_items": len(names),
            "distractor_effects": effects,
            "items_with_transcript": transcribed,
            **scores,
            "index_seconds": index_seconds,
            "ms_per_query": query_ms,
            "command": "python benchmarks/speech_recall.py",
        },
        args.out,
    )
    print(f"written to {target}")


if __name__ == "__main__":
    main()
