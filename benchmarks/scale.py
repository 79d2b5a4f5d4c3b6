"""How xmodal's costs grow with the home: build a home of N items, then measure every cost that must stay flat.

The home is built through the engine's own write path (catalog rows with paths, captions and metadata
sidecars' fields; vectors from a fast deterministic encoder over a clustered distribution: see scale_home.py),
over a real folder of N small files. Then, each in its own process where a user would have one:

- ``checkpoint_s``: one 2,048-item publication at full size (median of three; ``checkpoint_write_s`` is the
  catalog transaction before it);
- ``rescan_s``, ``rescan_per_file_us``, ``rescan_peak_rss_mb``: an unchanged ``index`` re-run over the files (a
  fresh process, nothing loaded); ``reconcile_s``: its reconciliation step alone;
- ``cold_start_s``: server process start to ``/readyz`` 200; ``server_rss_mb`` after the queries;
- ``query_p50_ms`` / ``query_p95_ms``: HTTP ``/search``, one text part, k=10; ``filtered_p50_ms``: with a filter
  passing 0.1% of the items; ``fused_p50_ms``: three parts (two texts and a vector) over two spaces;
- ``recall_at_10``: the engine (``Engine.query``, a vector part) against exact search over the stored vectors, on
  1,000 held-out queries; ``engine_qps`` and ``raw_faiss_qps_at_same_recall``: the same queries one at a time
  through the engine and through FAISS itself on the same segment indexes at the same tuned effort (so the same
  recall, printed as ``raw_faiss_recall_at_10``);
- ``disk_bytes_per_item`` (the whole home) and ``ram_bytes_per_item`` (the clip space's index files and ids).

    python benchmarks/scale.py --items 100000 --out benchmarks/results/scale_100k.json
    python benchmarks/scale.py --quick --out benchmarks/results/scale_quick.json   # 20k and 200k, with ratios
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import machine
from scale_home import GROUPS, WORDS, ScaleConfig, build, held_out_queries, write_files, write_items, zipf_words

CHECKPOINT = 2048
HTTP_QUERIES = 100
RECALL_QUERIES = 1000
QUICK_SIZES = (20_000, 200_000)
RATIO_LIMIT = 1.5


def _rss_mb(pid: int | str = "self", field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _du(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


def _child(config: ScaleConfig, mode: str, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, "--child", mode, "--root", str(config.root), "--home", str(config.home)]
    return subprocess.Popen([*command, "--dim", str(config.dim), *extra], stdout=subprocess.PIPE, text=True)


# the child processes -------------------------------------------------------------------------------------


def _rescan_child(config: ScaleConfig) -> None:
    """An unchanged re-run as a nightly job meets it: a fresh process, reconciliation, the walk, nothing loaded."""
    with config.open() as engine:
        started = time.perf_counter()
        repaired = sum(space.reconcile() for space in engine.spaces)
        reconcile_s = time.perf_counter() - started
        started = time.perf_counter()
        report = engine.index([config.root])
        seconds = time.perf_counter() - started
        loaded = [space.name for space in engine.spaces if space.encoder.loaded]
    result = {
        "rescan_s": seconds,
        "reconcile_s": reconcile_s,
        "repaired": repaired,
        "scanned": report.scanned,
        "unchanged": report.unchanged,
        "indexed": report.indexed + report.updated,
        "timings": report.timings,
        "models_loaded": loaded,
        "rescan_peak_rss_mb": _rss_mb(field="VmHWM"),
    }
    print(json.dumps(result))


def _serve_child(config: ScaleConfig, port: int) -> None:
    import uvicorn

    from xmodal.api.app import create_app

    engine = config.open()
    uvicorn.run(create_app(engine=engine), host="127.0.0.1", port=port, log_level="warning")


# measurements in the parent -------------------------------------------------------------------------------


def _checkpoints(config: ScaleConfig, items: int, rounds: int = 3) -> dict[str, float]:
    """Median time of one 2,048-item publication into the full space (and of its catalog write)."""
    publish_s, write_s = [], []
    with config.open() as engine:
        start = items
        for _ in range(rounds):
            files = list(write_files(config.root, start + CHECKPOINT, files_from=start))
            began = time.perf_counter()
            for offset in range(0, CHECKPOINT, 512):
                write_items(engine, config, files[offset : offset + 512], start + offset)
            middle = time.perf_counter()
            engine.spaces.save()
            publish_s.append(time.perf_counter() - middle)
            write_s.append(middle - began)
            start += CHECKPOINT
    return {
        "checkpoint_s": statistics.median(publish_s),
        "checkpoint_max_s": max(publish_s),
        "checkpoint_write_s": statistics.median(write_s),
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _http(config: ScaleConfig, count: int) -> dict[str, float]:
    """Cold start, then latency of plain, filtered and fused HTTP searches, then the server's RSS."""
    import httpx

    port = _free_port()
    started = time.perf_counter()
    server = _child(config, "serve", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None:
                    raise RuntimeError("the server exited before it was ready")
                time.sleep(0.05)  # polling a server coming up: the wait is what is measured
            cold_start = time.perf_counter() - started
            rng = np.random.default_rng(7)
            texts = [" ".join(WORDS[i] for i in zipf_words(rng, 3)) for _ in range(count)]
            vectors = held_out_queries(config.seed, config.dim, 50)

            def timed(body: dict[str, Any]) -> float:
                began = time.perf_counter()
                response = client.post("/search", json=body)
                response.raise_for_status()
                return time.perf_counter() - began

            first_query = timed({"text": texts[0], "k": 10})
            for text in texts[:3]:
                timed({"text": text, "k": 10})
            plain = [timed({"text": text, "k": 10}) for text in texts]
            filtered = [
                timed({"text": text, "k": 10, "where": {"group": f"g{n % GROUPS}"}}) for n, text in enumerate(texts)
            ]
            fused = [
                timed(
                    {
                        "parts": [
                            {"text": text},
                            {"text": texts[-1 - n]},
                            {"vector": vectors[n % len(vectors)].tolist(), "space": "clip"},
                        ],
                        "k": 10,
                    }
                )
                for n, text in enumerate(texts)
            ]
            rss = _rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    return {
        "cold_start_s": cold_start,
        "first_query_ms": 1000 * first_query,
        "server_rss_mb": rss,
        "query_p50_ms": _percentile(plain, 0.5),
        "query_p95_ms": _percentile(plain, 0.95),
        "filtered_p50_ms": _percentile(filtered, 0.5),
        "filtered_p95_ms": _percentile(filtered, 0.95),
        "fused_p50_ms": _percentile(fused, 0.5),
    }


def _recall_and_qps(config: ScaleConfig, count: int) -> dict[str, Any]:
    """Engine against exact search on held-out queries; the engine's QPS beside raw FAISS on the same indexes."""
    import faiss
    from sqlalchemy import select

    from xmodal.search.query import QueryPart
    from xmodal.store.ann import search_parameters
    from xmodal.store.models import Embedding

    queries = held_out_queries(config.seed, config.dim, count)
    with config.open() as engine:
        space = engine.spaces["clip"]
        snapshot = space.stored_index()
        assert snapshot is not None
        ids, stored = snapshot.vectors()
        _, rows = faiss.knn(
            queries, np.ascontiguousarray(stored, dtype=np.float32), 10, metric=faiss.METRIC_INNER_PRODUCT
        )
        del stored
        with engine.catalog.session() as session:
            pairs = np.asarray(
                session.execute(select(Embedding.id, Embedding.item_id).where(Embedding.space == "clip")).all()
            )
        owner = dict(zip(pairs[:, 0].tolist(), pairs[:, 1].tolist(), strict=True))
        exact = [{owner[int(ids[r])] for r in row} for row in rows]
        found: list[set[int]] = []
        began = time.perf_counter()
        for vector in queries:
            query = engine.build_query(parts=[QueryPart.vector("clip", vector)], k=10, space="clip")
            found.append({result.item_id for result in engine.query(query).results})
        engine_s = time.perf_counter() - began
        raw: list[set[int]] = []
        segments = [(s, s._index, search_parameters(s._index, s.tuning, None)) for s in snapshot.segments]
        began = time.perf_counter()
        for vector in queries:
            row = vector.reshape(1, -1)
            scores, labels = [], []
            for segment, index, params in segments:
                found_scores, found_labels = index.search(row, 10, params=params.params)
                scores.append(found_scores[0])
                labels.append(np.where(found_labels[0] >= 0, segment.ids[np.maximum(found_labels[0], 0)], -1))
            merged_scores, merged_labels = np.concatenate(scores), np.concatenate(labels)
            best = merged_labels[np.argsort(-merged_scores)[:10]]
            raw.append({owner[int(i)] for i in best if i >= 0})
        raw_s = time.perf_counter() - began
        index_bytes = sum(_du(segment.folder) - segment.raw.nbytes for segment in snapshot.segments)
        return {
            "recall_at_10": float(np.mean([len(e & f) / 10 for e, f in zip(exact, found, strict=True)])),
            "raw_faiss_recall_at_10": float(np.mean([len(e & f) / 10 for e, f in zip(exact, raw, strict=True)])),
            "engine_qps": count / engine_s,
            "raw_faiss_qps_at_same_recall": count / raw_s,
            "recall_queries": count,
            "index": snapshot.index_key,
            "segments": len(snapshot.segments),
            "search_effort": snapshot.tuning.as_dict(),
            "index_ids_bytes": int(index_bytes),
        }


def measure(items: int, dim: int, scratch: Path, *, queries: int, recall_queries: int) -> dict[str, Any]:
    config = ScaleConfig(root=scratch / f"files-{items}", home=scratch / f"home-{items}", dim=dim)
    row: dict[str, Any] = {"items": items, "dim": dim}
    started = time.perf_counter()
    build(config, items)
    row["build_s"] = time.perf_counter() - started
    print(f"  built {items:,} items in {row['build_s']:.0f} s", file=sys.stderr)
    rescan = _child(config, "rescan")
    out, _ = rescan.communicate()
    if rescan.returncode:
        raise RuntimeError("the rescan process failed")
    rescanned = json.loads(out.strip().splitlines()[-1])
    if rescanned["unchanged"] != items or rescanned["models_loaded"]:
        raise RuntimeError(f"an unchanged re-run did work: {rescanned}")
    row.update({key: rescanned[key] for key in ("rescan_s", "rescan_peak_rss_mb", "reconcile_s")})
    row["rescan_per_file_us"] = 1e6 * rescanned["rescan_s"] / items
    row["rescan_timings"] = rescanned["timings"]
    row["http_queries"] = queries
    row.update(_http(config, queries))
    row.update(_recall_and_qps(config, recall_queries))
    row.update(_checkpoints(config, items))
    total = items + 3 * CHECKPOINT
    row["disk_bytes_per_item"] = _du(config.home) / total
    row["ram_bytes_per_item"] = row.pop("index_ids_bytes") / items
    return row


COLUMNS = (
    ("items", "{:,}"),
    ("build_s", "{:.0f}"),
    ("checkpoint_s", "{:.3f}"),
    ("rescan_s", "{:.2f}"),
    ("rescan_per_file_us", "{:.1f}"),
    ("rescan_peak_rss_mb", "{:.0f}"),
    ("reconcile_s", "{:.3f}"),
    ("cold_start_s", "{:.1f}"),
    ("server_rss_mb", "{:.0f}"),
    ("query_p50_ms", "{:.1f}"),
    ("query_p95_ms", "{:.1f}"),
    ("filtered_p50_ms", "{:.1f}"),
    ("fused_p50_ms", "{:.1f}"),
    ("recall_at_10", "{:.3f}"),
    ("engine_qps", "{:.0f}"),
    ("raw_faiss_qps_at_same_recall", "{:.0f}"),
    ("disk_bytes_per_item", "{:.0f}"),
    ("ram_bytes_per_item", "{:.0f}"),
)


def print_table(rows: list[dict[str, Any]], file: TextIO | None = None) -> None:
    """One line per measure, one column per size (a markdown table)."""
    lines = ["| measure | " + " | ".join(f"{row['items']:,}" for row in rows) + " |", "| --- |" + " ---: |" * len(rows)]
    lines += [f"| {key} | " + " | ".join(form.format(row[key]) for row in rows) + " |" for key, form in COLUMNS[1:]]
    lines.append("| index | " + " | ".join(f"{row['index']} ({row['segments']} segments)" for row in rows) + " |")
    print("\n".join(lines), file=file or sys.stdout, flush=True)


def ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Largest over smallest size, for the figures that must not grow with the home."""
    small, large = rows[0], rows[-1]
    return {key: large[key] / small[key] for key in ("checkpoint_s", "query_p50_ms", "rescan_per_file_us")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--quick", action="store_true", help="20k and 200k in one run, with their ratios")
    parser.add_argument("--sizes", type=int, nargs="+", help="several sizes in one run, with their ratios")
    parser.add_argument("--queries", type=int, default=HTTP_QUERIES, help="HTTP queries of each kind")
    parser.add_argument("--recall-queries", type=int, default=RECALL_QUERIES, help="held-out queries for recall")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scale.json")
    parser.add_argument("--scratch", type=Path, default=None, help="where the files and homes go (a temp dir)")
    parser.add_argument("--child", choices=("rescan", "serve"), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        config = ScaleConfig(root=args.root, home=args.home, dim=args.dim)
        _rescan_child(config) if args.child == "rescan" else _serve_child(config, args.port)
        return
    sizes = QUICK_SIZES if args.quick else tuple(args.sizes or (args.items,))
    payload: dict[str, Any] = {"benchmark": "scale", "machine": machine(), "command": " ".join(sys.argv)}
    rows: list[dict[str, Any]] = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        for size in sizes:
            row = measure(size, args.dim, Path(scratch), queries=args.queries, recall_queries=args.recall_queries)
            rows.append(row)
            args.out.write_text(json.dumps({**payload, "runs": rows, "finished": False}, indent=2) + "\n")
            print_table(rows, file=sys.stderr)  # each size as it is done: a large run may be stopped
    print_table(rows)
    if len(rows) > 1:
        found = ratios(rows)
        for key, value in found.items():
            verdict = "ok" if value <= RATIO_LIMIT else f"over {RATIO_LIMIT}x"
            print(f"{key}: {rows[-1]['items']:,} / {rows[0]['items']:,} = {value:.2f}x ({verdict})")
        payload.update({"runs": rows, "ratios": found})
    else:
        payload.update(rows[0])
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
