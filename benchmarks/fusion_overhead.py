"""What fusion and reranking cost next to the ANN search itself, for k=10 and k=100.

A synthetic catalog (random unit vectors in two spaces, like `clip` and `text`) is searched with two raw-vector
parts, one per space, so no encoder time is involved. The searcher times its stages: `ann` (FAISS search and
mapping vector ids to items, per space and part), `fusion` (exact re-scoring of every candidate against every
source, calibration, fusion), `rerank` (near-duplicate folding and, when asked, MMR).

    python benchmarks/fusion_overhead.py [--items 50000] [--queries 50]

Prints a table and writes benchmarks/results/fusion_overhead.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import write_result

from xmodal import Engine, QueryPart, Settings
from xmodal.encoders.base import l2_normalise
from xmodal.store.ann import IndexPolicy
from xmodal.store.catalog import ItemRecord, NewEmbedding, WriteRequest
from xmodal.store.merge_policy import MergePolicy
from xmodal.store.writer import SpaceWriter

SPACES = {"clip": 512, "text": 384}


def build(home: Path, items: int, seed: int = 0) -> Engine:
    engine = Engine.open(settings=Settings(home=home, lexical=False))
    rng = np.random.default_rng(seed)
    indexes = {}
    for name, dim in SPACES.items():
        engine.catalog.save_space(name=name, encoder_spec="synthetic", dim=dim, fingerprint="synthetic")
        indexes[name] = SpaceWriter.open(
            engine.settings.spaces_dir / name,
            space=name,
            encoder_spec="synthetic",
            fingerprint="x",
            dim=dim,
            dtype="float16",
            policy=IndexPolicy(),
            merges=MergePolicy(),
        )
    for start in range(0, items, 5000):
        requests = [
            WriteRequest(
                ItemRecord(path=f"/synthetic/{n}.jpg", source="file:///synthetic", size=1, mtime_ns=1,
                           modality="image", content_hash=f"{n:064x}"),
                {name: [NewEmbedding()] for name in SPACES},
            )
            for n in range(start, min(items, start + 5000))
        ]  # fmt: skip
        new_ids, _ = engine.catalog.write_items(requests)
        for name, dim in SPACES.items():
            indexes[name].add(np.asarray(new_ids[name]), l2_normalise(rng.normal(size=(len(new_ids[name]), dim))))
    for index in indexes.values():
        index.publish()
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        engine = build(Path(scratch) / "home", args.items)
        build_seconds = time.perf_counter() - started
        rng = np.random.default_rng(1)
        try:
            for k in (10, 100):
                for diversity in (0.0, 0.3):
                    stages: dict[str, list[float]] = {"ann": [], "fusion": [], "rerank": [], "total": []}
                    for _ in range(args.queries):
                        parts = [QueryPart.vector(name, rng.normal(size=dim).tolist()) for name, dim in SPACES.items()]
                        began = time.perf_counter()
                        response = engine.query(engine.build_query(parts=parts, k=k, diversity=diversity))
                        stages["total"].append(time.perf_counter() - began)
                        for stage in ("ann", "fusion", "rerank"):
                            stages[stage].append(response.timings.get(stage, 0.0))
                    median = {stage: statistics.median(values) * 1000 for stage, values in stages.items()}
                    rows.append(
                        {
                            "k": k,
                            "diversity": diversity,
                            **{f"{stage}_ms": value for stage, value in median.items()},
                            "fusion_rerank_over_ann": (median["fusion"] + median["rerank"]) / median["ann"],
                        }
                    )
        finally:
            engine.close()
    print(f"{'k':>4} {'mmr':>4} {'ann ms':>8} {'fusion ms':>10} {'rerank ms':>10} {'total ms':>9} {'(fus+rr)/ann':>13}")
    for row in rows:
        print(
            f"{row['k']:>4} {row['diversity']:>4} {row['ann_ms']:>8.2f} {row['fusion_ms']:>10.2f} "
            f"{row['rerank_ms']:>10.2f} {row['total_ms']:>9.2f} {row['fusion_rerank_over_ann']:>13.2f}"
        )
    target = write_result(
        "fusion_overhead",
        {
            "items": args.items,
            "spaces": SPACES,
            "queries": args.queries,
            "build_seconds": build_seconds,
            "rows": rows,
            "command": f"python benchmarks/fusion_overhead.py --items {args.items} --queries {args.queries}",
        },
        args.out,
    )
    print(f"written to {target}")


if __name__ == "__main__":
    main()
