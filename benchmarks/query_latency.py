"""Query latency and throughput of the real HTTP server, at concurrency 1, 4 and 16, and its memory.

    python benchmarks/query_latency.py            # 300 requests per concurrency level
    python benchmarks/query_latency.py --quick    # 100

Indexes the Tux Paint stamps (Debian ``tuxpaint-stamps-default``: 800 images with captions, found through their
captions by the real MiniLM ``text`` space) into a scratch home, starts ``xmodal serve`` as a subprocess on a free
loopback port, and sends text queries (words from the captions) with httpx, ``c`` at a time. Prints QPS and
p50/p95/p99 latency per level, the server's resident memory, and the indexes' bytes per vector.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import write_result
from tuxpaint import DEFAULT_STAMPS

LEVELS = (1, 4, 16)


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


def _wait_until_up(base: str, server: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
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
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
