"""What a checkpoint costs as a space grows, how soon a reader sees it, and what it does to query latency.

For each size N (512-d by default) a space of N vectors is built as one segment, then 2,048-vector checkpoints are
published into it (a new segment each, as the indexer's ``checkpoint_every`` does). Measured:

- ``publish_s``: median time of one checkpoint publication (segment + manifest + calibration sample);
- ``visible_s``: median time from a publication's return until a reader's background refresh serves it;
- ``idle_p99_ms`` / ``publishing_p99_ms``: search latency (k=10) of a reader thread while idle and while the writer
  publishes.

    python benchmarks/store_publish.py                 # 10k, 100k and 1M
    python benchmarks/store_publish.py --sizes 10000 100000 --out benchmarks/results/store_publish_quick.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from xmodal.spaces import VectorSpace
from xmodal.store.ann import IndexKind, IndexPlan, IndexPolicy
from xmodal.store.manifest import SEGMENTS_DIR, Manifest, publish
from xmodal.store.merge_policy import MergePolicy
from xmodal.store.segments import write_segment
from xmodal.store.writer import SpaceWriter

CHECKPOINT = 2048
ROUNDS = 6


def _unit(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((count, dim), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _base(directory: Path, size: int, dim: int, rng: np.random.Generator) -> None:
    """A published space of ``size`` vectors in one flat segment, written in blocks (memory stays small)."""
    plan = IndexPlan(IndexKind.FLAT, "Flat", 4 * dim)
    vectors = np.concatenate([_unit(rng, min(100_000, size - s), dim) for s in range(0, size, 100_000)])
    info = write_segment(
        directory / SEGMENTS_DIR, "s00000000_base", np.arange(1, size + 1), vectors,
        plan=plan, policy=IndexPolicy(), dtype=np.dtype("float16"),
    )  # fmt: skip
    manifest = Manifest(space="bench", encoder_spec="none", fingerprint="none", dim=dim, seq=1, segments=(info,))
    publish(directory, manifest)


def measure(size: int, dim: int) -> dict[str, float]:
    rng = np.random.default_rng(size)
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch) / "bench"
        _base(directory, size, dim, rng)
        policy = IndexPolicy(exact_below=10**9)  # flat segments: the cost measured is the store's, not HNSW's
        merges = MergePolicy(factor=10, floor=CHECKPOINT, max_sync=250_000)
        writer = SpaceWriter.open(
            directory, space="bench", encoder_spec="none", fingerprint="none", dim=dim, dtype="float16",
            policy=policy, merges=merges,
        )  # fmt: skip
        reader = VectorSpace("bench", encoder=None, directory=directory, catalog=None)  # type: ignore[arg-type]
        reader.stored_index()
        queries = _unit(rng, 64, dim)
        latencies: list[tuple[bool, float]] = []
        publishing = threading.Event()
        stop = threading.Event()

        def ask() -> None:
            turn = 0
            while not stop.is_set():
                started = time.perf_counter()
                snapshot = reader.stored_index()
                assert snapshot is not None
                snapshot.search(queries[turn % len(queries)], 10)
                latencies.append((publishing.is_set(), time.perf_counter() - started))
                turn += 1

        asker = threading.Thread(target=ask)
        asker.start()
        time.sleep(2.0)  # idle latency first (a benchmark, not a test: timing is the point)
        publish_s, visible_s = [], []
        next_id = size + 1
        for _ in range(ROUNDS):
            writer.add(np.arange(next_id, next_id + CHECKPOINT), _unit(rng, CHECKPOINT, dim))
            next_id += CHECKPOINT
            publishing.set()
            started = time.perf_counter()
            manifest = writer.publish()
            publish_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            reader.refresh()
            while (snap := reader.stored_index()) is None or snap.manifest.seq != manifest.seq:
                time.sleep(0.001)
            visible_s.append(time.perf_counter() - started)
            publishing.clear()
            time.sleep(0.5)
        stop.set()
        asker.join()
    idle = sorted(t for busy, t in latencies if not busy)
    busy = sorted(t for busy, t in latencies if busy)

    def p99(values: list[float]) -> float:
        return 1000 * values[min(len(values) - 1, int(0.99 * len(values)))] if values else float("nan")

    return {
        "size": size,
        "dim": dim,
        "publish_s": statistics.median(publish_s),
        "publish_max_s": max(publish_s),
        "visible_s": statistics.median(visible_s),
        "idle_p99_ms": p99(idle),
        "publishing_p99_ms": p99(busy),
        "queries_idle": len(idle),
        "queries_publishing": len(busy),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "store_publish.json")
    args = parser.parse_args()
    rows = [measure(size, args.dim) for size in args.sizes]
    header = ("vectors", "publish s", "max s", "visible s", "idle p99 ms", "publishing p99 ms")
    print("{:>10} {:>10} {:>8} {:>10} {:>12} {:>18}".format(*header))
    for row in rows:
        print(
            f"{row['size']:>10,} {row['publish_s']:>10.3f} {row['publish_max_s']:>8.3f} {row['visible_s']:>10.3f} "
            f"{row['idle_p99_ms']:>12.1f} {row['publishing_p99_ms']:>18.1f}"
        )
    if len(rows) > 1:
        ratio = rows[-1]["publish_s"] / rows[0]["publish_s"]
        print(f"publication at {rows[-1]['size']:,} / at {rows[0]['size']:,}: {ratio:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
