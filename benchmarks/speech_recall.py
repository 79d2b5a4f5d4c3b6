"""Text -> speech recall on real data: Tux Paint's spoken stamp descriptions, found by their written captions.

Each English reading (``*_desc.ogg``) is indexed with the stamps' sound effects as distractors; speech goes
through faster-whisper (tiny.en, offline) into the `text` space. Each stamp's written caption is a query; a query
is a hit at K when its own reading is in the top K audio results.

    python benchmarks/speech_recall.py [--stamps /usr/share/tuxpaint/stamps]

Prints a table and writes benchmarks/results/speech_recall.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import recall_at, write_result

from xmodal import Engine, Settings
from xmodal.indexer.decode import caption_from_sidecar


def readings(stamps: Path) -> list[tuple[Path, str]]:
    """(spoken reading, written caption) for every English reading whose stamp has a caption."""
    pairs = []
    for reading in sorted(stamps.rglob("*_desc.ogg")):
        sidecar = reading.with_name(reading.name.removesuffix("_desc.ogg") + ".txt")
        caption = caption_from_sidecar(sidecar.read_bytes(), 500) if sidecar.is_file() else None
        if caption:
            pairs.append((reading, caption))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stamps", type=Path, default=Path("/usr/share/tuxpaint/stamps"))
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: benchmarks/results/)")
    args = parser.parse_args()
    if not args.stamps.is_dir():
        sys.exit(f"{args.stamps} not found: apt-get install tuxpaint-stamps-default")

    pairs = readings(args.stamps)
    effects = [r.with_name(r.name.replace("_desc.ogg", ".ogg")) for r, _ in pairs]
    effects = [e for e in effects if e.is_file()]
    with tempfile.TemporaryDirectory() as scratch:
        corpus = Path(scratch) / "corpus"
        corpus.mkdir()
        # Links without the stamps' caption files beside them: only the speech itself can be found.
        for number, path in enumerate([r for r, _ in pairs] + effects):
            os.symlink(path, corpus / f"{number:04d}_{path.name}")
        names = {f"{number:04d}_{reading.name}": caption for number, (reading, caption) in enumerate(pairs)}
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
            "speech_items": len(pairs),
            "distractor_effects": len(effects),
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
