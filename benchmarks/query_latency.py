"""Query latency and throughput of the real HTTP server, side by side with clip-retrieval's back end.

    python benchmarks/query_latency.py --peer                # xmodal vs clip-retrieval 2.45.0 back, same data
    python benchmarks/query_latency.py --peer --seconds 10   # shorter levels
    python benchmarks/query_latency.py --quick               # the Tux Paint run: 100 requests per level

``--peer``: the clip-retrieval peer harness's data (``/work/shared/peers/clip-retrieval``: its ``gen_images.py``
images with captions, its ``make_ckpt.py`` random ViT-B-32) indexed by xmodal into ``--work``, then ``xmodal serve``
driven by the harness's load client (``load_client.py``: the same query texts, a new connection per request) at
concurrency 1, 4, 8 and 16 for ``/knn-service`` (index ``clip``) and ``/search`` (fused over every space that can
answer, k = 20). When the peer's venv is there (``--peer-venv``, built as its INSTALL.md says), the same invocation
first serves the same vectors with ``clip-retrieval back`` (ids only) and load-tests it the same way, and prints
xmodal / peer ratios. Both servers run side by side and the load moves between them level by level, ``--rounds``
times over: this machine's speed swings from minute to minute, so each ratio is taken between neighbouring runs and
the table shows medians over rounds. Every query text is new (no cache on either side helps) unless
``--repeat-queries``.

Without ``--peer``: indexes the Tux Paint stamps (Debian ``tuxpaint-stamps-default``: 800 images with captions,
found through their captions by the real MiniLM ``text`` space) into a scratch home, starts ``xmodal serve`` and
sends text queries to ``/search`` with httpx, ``c`` at a time; QPS and p50/p95/p99 per level, the server's memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import load_client
import peer_back
from common import write_result
from tuxpaint import DEFAULT_STAMPS

LEVELS = (1, 4, 16)
PEER_LEVELS = (1, 4, 8, 16)
HARNESS = Path("/work/shared/peers/clip-retrieval")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and its children (the workers of a multi-process server)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(c) for c in children.read_text().split()] if children.is_file() else []
    return _rss_bytes(pid) + sum(_tree_rss_bytes(kid) for kid in kids)


def _wait_until_up(base: str, server: subprocess.Popen[bytes], timeout_s: float = 300, probe: str = "/healthz") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode}")
        try:
            if httpx.get(f"{base}{probe}", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)  # polling a starting server's port; nothing else to wait on
    raise SystemExit("the server did not come up")


async def _level(base: str, queries: list[str], concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:

        async def one(text: str) -> None:
            async with gate:
                started = time.perf_counter()
                response = await client.post("/search", json={"text": text, "k": 10})
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()

        await one(queries[0])  # warm up (model loads lazily)
        latencies.clear()
        started = time.perf_counter()
        await asyncio.gather(*(one(text) for text in queries))
        wall = time.perf_counter() - started
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000

    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "qps": len(latencies) / wall,
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "mean_ms": statistics.fmean(latencies) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 requests per level instead of 300")
    parser.add_argument("--stamps", type=Path, default=DEFAULT_STAMPS)
    parser.add_argument("--workers", type=int, default=1, help="server processes (xmodal serve --workers)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: benchmarks/results/)")
    parser.add_argument("--peer", action="store_true", help="the side-by-side run with clip-retrieval's back")
    parser.add_argument("--harness", type=Path, default=HARNESS, help="the peer harness folder")
    parser.add_argument("--peer-venv", type=Path, default=None, help="its venv (default: HARNESS/venv)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/xmodal-peer-bench"), help="data, homes, logs")
    parser.add_argument("--images", type=int, default=2000, help="images the harness generates")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per concurrency level")
    parser.add_argument("--rounds", type=int, default=2, help="--peer: times every server and level is run")
    parser.add_argument("--repeat-queries", action="store_true", help="cycle 200 texts (the query cache helps)")
    args = parser.parse_args()
    if args.peer:
        peer_main(args)
        return
    if not args.stamps.is_dir():
        raise SystemExit(f"{args.stamps} is missing: apt install tuxpaint-stamps-default")
    requests = 100 if args.quick else 300
    words = sorted(
        {w.strip(".,!?").lower() for p in args.stamps.rglob("*.txt") for w in p.read_text(errors="ignore").split()[:8]}
    )
    words = [w for w in words if w.isalpha() and len(w) > 3]
    rng = random.Random(0)
    queries = [" ".join(rng.sample(words, 3)) for _ in range(requests)]
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch) / "home"
        env = {**os.environ, "XMODAL_HOME": str(home), "XMODAL_SPEECH_MODEL": "", "HF_HUB_OFFLINE": "1"}
        index = [sys.executable, "-m", "xmodal", "index", str(args.stamps), "--quiet"]
        subprocess.run(index, env=env, check=False, stdout=subprocess.DEVNULL)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        serve = [sys.executable, "-m", "xmodal", "serve", "--port", str(port), "--workers", str(args.workers)]
        log = (Path(scratch) / "server.log").open("w")
        server = subprocess.Popen(serve, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_until_up(base, server)
            rows = [asyncio.run(_level(base, queries, level)) for level in LEVELS]
            rss = _tree_rss_bytes(server.pid)
        except httpx.HTTPStatusError:
            print((Path(scratch) / "server.log").read_text()[-6000:], file=sys.stderr)
            raise
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()
        vectors = {p.parent.parent.name: p.stat().st_size for p in home.glob("spaces/*/current/index.faiss")}
    print(f"{'concurrency':>11} {'QPS':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for row in rows:
        print(
            f"{row['concurrency']:>11} {row['qps']:8.1f} {row['p50_ms']:8.1f} {row['p95_ms']:8.1f} {row['p99_ms']:8.1f}"
        )
    print(f"server resident memory: {rss / 2**20:.0f} MiB; index files: {vectors}")
    name = "query_latency" + ("_quick" if args.quick else "") + (f"_{args.workers}workers" if args.workers > 1 else "")
    payload = {
        "requests_per_level": requests,
        "workers": args.workers,
        "levels": rows,
        "server_rss_bytes": rss,
        "index_file_bytes": vectors,
    }
    path = write_result(name, payload, args.out)
    print(f"wrote {path}")


def _prepare_data(args: argparse.Namespace) -> tuple[Path, Path]:
    """The harness's images and random checkpoint under ``--work`` (made once, then reused)."""
    images, checkpoint = args.work / "images", args.work / "vitb32_random_seed0.pt"
    args.work.mkdir(parents=True, exist_ok=True)
    if len(list(images.glob("*.jpg"))) < args.images:
        gen = [sys.executable, args.harness / "gen_images.py", images, str(args.images), "1234", "2"]
        subprocess.run(gen, check=True)
    if not checkpoint.is_file():
        subprocess.run([sys.executable, args.harness / "make_ckpt.py", checkpoint, "0"], check=True)
    return images, checkpoint


def _texts(args: argparse.Namespace) -> Iterator[str]:
    return itertools.cycle(load_client.make_queries(200)) if args.repeat_queries else load_client.fresh_texts()


def peer_main(args: argparse.Namespace) -> None:
    images, checkpoint = _prepare_data(args)
    home = args.work / "xhome"
    env = {
        **os.environ,
        "XMODAL_HOME": str(home),
        "XMODAL_CLIP_ENCODER": f"open_clip:ViT-B-32@{checkpoint}",
        "XMODAL_SPEECH_MODEL": "",
        "XMODAL_OCR": "false",  # the harness's images are noise and shapes; the peer reads no words either
        "HF_HUB_OFFLINE": "1",
    }
    if not args.repeat_queries:
        env["XMODAL_QUERY_CACHE_SIZE"] = "0"  # every text is new anyway; measure the encoder, not the cache
    if not (home / "catalog.db").is_file():
        subprocess.run([sys.executable, "-m", "xmodal", "index", str(images), "--quiet"], env=env, check=True)
    venv = args.peer_venv or args.harness / "venv"
    logs = args.work / "logs"
    logs.mkdir(exist_ok=True)
    has_peer = (venv / "bin" / "clip-retrieval").is_file()
    if not has_peer:
        print(f"no peer venv at {venv} (see {args.harness / 'INSTALL.md'}): xmodal only", flush=True)
    with contextlib.ExitStack() as stack:
        targets: dict[str, load_client.Target] = {}
        pids: dict[str, int] = {}
        if has_peer:
            port = _free_port()
            print(f"clip-retrieval back on 127.0.0.1:{port} (log {logs / 'peer_back.log'})", flush=True)
            pid = stack.enter_context(_peer_server(args, venv, home, env, checkpoint, port, logs))
            targets[PEER] = load_client.Target("127.0.0.1", port, "/knn-service", load_client.knn_body(peer_back.INDEX),
                                               load_client.knn_check())  # fmt: skip
            pids[PEER] = pid
        port = _free_port()
        server = stack.enter_context(_xmodal_server(args, env, port, logs))
        pids["xmodal"] = server.pid
        base = f"http://127.0.0.1:{port}"
        targets[KNN] = load_client.Target("127.0.0.1", port, "/knn-service", load_client.knn_body("clip"),
                                          load_client.knn_check())  # fmt: skip
        targets[SEARCH] = load_client.Target("127.0.0.1", port, "/search", load_client.search_body(),
                                             load_client.search_check())  # fmt: skip
        rounds = _interleaved(targets, _texts(args), args.seconds, args.rounds)
        rss = {name: _tree_rss_bytes(pid) for name, pid in pids.items()}
        spaces = httpx.post(f"{base}/search", json={"text": "a red circle", "k": 1}, timeout=60).json()
    print(f"\n/search answered from {spaces.get('spaces_searched')}; unavailable: {spaces.get('spaces_unavailable')}")
    rows = _summary(rounds)
    _print_table(rows)
    name = "query_latency_peer" + (f"_{args.workers}workers" if args.workers > 1 else "")
    payload = {
        "seconds_per_level": args.seconds,
        "rounds": args.rounds,
        "workers": args.workers,
        "repeat_queries": args.repeat_queries,
        "images": len(list(images.glob("*.jpg"))),
        "rows": rows,
        "runs": rounds,
        "server_rss_bytes": rss,
        "search_spaces": spaces.get("spaces_searched"),
    }
    print(f"wrote {write_result(name, payload, args.out)}")


PEER, KNN, SEARCH = "clip-retrieval back (ids only)", "xmodal /knn-service", "xmodal /search (fused)"


@contextlib.contextmanager
def _peer_server(
    args: argparse.Namespace, venv: Path, home: Path, env: dict[str, str], checkpoint: Path, port: int, logs: Path
) -> Iterator[int]:
    """clip-retrieval's back over the vectors of xmodal's clip space (its index built once, then reused)."""
    embeddings, index = args.work / "peer_embeddings", args.work / "peer_index"
    if not (index / "image.index").is_file():
        from xmodal.engine import Engine

        with Engine.open(home, clip_encoder=env["XMODAL_CLIP_ENCODER"], speech_model="") as engine:
            print(f"exporting {peer_back.export_vectors(engine, embeddings)} clip vectors for the peer")
        peer_back.build_index(venv, args.harness, embeddings, index, logs / "peer_index.log")
    with peer_back.serve(venv, index, checkpoint, port, logs / "peer_back.log", args.harness) as pid:
        _wait_until_peer(port, pid)
        yield pid


@contextlib.contextmanager
def _xmodal_server(
    args: argparse.Namespace, env: dict[str, str], port: int, logs: Path
) -> Iterator[subprocess.Popen[bytes]]:
    serve = [sys.executable, "-m", "xmodal", "serve", "--port", str(port), "--workers", str(args.workers)]
    with (logs / "xmodal_serve.log").open("w") as log:
        server = subprocess.Popen(serve, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(f"http://127.0.0.1:{port}", server)
        yield server
    finally:
        server.terminate()
        server.wait(timeout=60)


def _interleaved(
    targets: dict[str, load_client.Target], texts: Iterator[str], seconds: float, rounds: int
) -> list[dict[str, Any]]:
    """Every target at every level, one after the other, ``rounds`` times over: this machine's speed swings from
    minute to minute (its second vCPU comes and goes), so each ratio is taken between neighbouring runs."""
    for target in targets.values():
        for _ in range(5):  # warm up, not counted
            target.request(next(texts))
    runs = []
    for number in range(rounds):
        for level in PEER_LEVELS:
            for name, target in targets.items():
                row = {"server": name, "round": number, **load_client.run_level(target, texts, level, seconds)}
                print(f"  round {number} {name:<32} c={level:<3} {row['qps']:7.2f} QPS  "
                      f"p50 {row.get('p50_ms', 0):7.1f} ms  p99 {row.get('p99_ms', 0):7.1f} ms  "
                      f"errors {row['errors']}", flush=True)  # fmt: skip
                runs.append(row)
    return runs


def _summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per server and level: the median over rounds of QPS and latencies, and the median of the per-round ratios
    to the peer's QPS at the same level."""
    peer = {(r["round"], r["concurrency"]): r["qps"] for r in runs if r["server"] == PEER}
    rows = []
    for name in dict.fromkeys(r["server"] for r in runs):
        for level in PEER_LEVELS:
            mine = [r for r in runs if r["server"] == name and r["concurrency"] == level]
            row: dict[str, Any] = {"server": name, "concurrency": level, "rounds": len(mine)}
            for key in ("qps", "p50_ms", "p95_ms", "p99_ms"):
                row[key] = statistics.median(r.get(key, 0.0) for r in mine)
            row["errors"] = sum(r["errors"] for r in mine)
            ratios = [r["qps"] / peer[(r["round"], level)] for r in mine if peer.get((r["round"], level))]
            if ratios:
                row["x_peer"] = statistics.median(ratios)
                row["x_peer_each_round"] = ratios
            rows.append(row)
    return rows


def _wait_until_peer(port: int, pid: int, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            raise SystemExit("clip-retrieval back exited; see its log")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/indices-list", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.5)  # polling a starting server's port; nothing else to wait on
    raise SystemExit("clip-retrieval back did not come up")


def _print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'server':<34} {'c':>3} {'QPS':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6} {'x peer':>7}")
    for row in rows:
        ratio = f"{row['x_peer']:.2f}" if "x_peer" in row else "-"
        print(f"{row['server']:<34} {row['concurrency']:>3} {row['qps']:7.2f} {row.get('p50_ms', 0):8.1f} "
              f"{row.get('p95_ms', 0):8.1f} {row.get('p99_ms', 0):8.1f} {row['errors']:>6} {ratio:>7}")  # fmt: skip


if __name__ == "__main__":
    main()
