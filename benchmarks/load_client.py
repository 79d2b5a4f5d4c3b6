"""A loopback HTTP load client equivalent to the clip-retrieval peer harness's ``load_test.py``.

The same query texts (its ``make_queries``: colours and shapes, numbered so that no two are alike), one new HTTP
connection per request (no keep-alive, stdlib ``http.client``), ``c`` client threads sending back to back for a
fixed time. A response counts when it is a 200 whose body ``check`` accepts.
"""

from __future__ import annotations

import http.client
import itertools
import json
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "cyan", "white", "black", "pink"]
SHAPES = ["circle", "square", "triangle", "line", "ellipse"]
BGS = ["noisy", "grainy", "speckled", "dark", "bright", "blurry-looking"]


def make_queries(n: int, seed: int = 7) -> list[str]:
    """The peer harness's query texts (same generator, same seed)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.randint(1, 3)
        parts = [f"a {rng.choice(COLORS)} {rng.choice(SHAPES)}" for _ in range(k)]
        out.append(", ".join(parts) + f" on a {rng.choice(BGS)} background #{i}")
    return out


def knn_body(index: str, k: int = 20) -> Callable[[str], dict[str, Any]]:
    """clip-retrieval's ``/knn-service`` body, as the peer harness sends it."""

    def body(text: str) -> dict[str, Any]:
        return {
            "text": text, "modality": "image", "num_images": k, "indice_name": index, "num_result_ids": k,
            "deduplicate": False, "use_safety_model": False, "use_violence_detector": False,
            "aesthetic_score": "", "aesthetic_weight": "",
        }  # fmt: skip

    return body


def knn_check(k: int = 20) -> Callable[[Any], bool]:
    return lambda data: isinstance(data, list) and len(data) == k and all("id" in r and "similarity" in r for r in data)


def search_body(k: int = 20) -> Callable[[str], dict[str, Any]]:
    return lambda text: {"text": text, "k": k}


def search_check(k: int = 20) -> Callable[[Any], bool]:
    return lambda data: isinstance(data, dict) and len(data.get("results", ())) == k


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str
    body: Callable[[str], dict[str, Any]]
    check: Callable[[Any], bool]

    def request(self, text: str) -> tuple[float, str | None, int]:
        """(seconds, error or None, response bytes) of one request on a new connection."""
        payload = json.dumps(self.body(text))
        started = time.perf_counter()
        try:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            conn.request("POST", self.path, body=payload, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            conn.close()
            if response.status != 200:
                return time.perf_counter() - started, f"http {response.status}: {data[:200]!r}", len(data)
            if not self.check(json.loads(data)):
                return time.perf_counter() - started, f"unexpected body {data[:200]!r}", len(data)
            return time.perf_counter() - started, None, len(data)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            return time.perf_counter() - started, f"{type(exc).__name__}: {exc}", 0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def run_level(target: Target, texts: Iterator[str], concurrency: int, seconds: float) -> dict[str, Any]:
    """``concurrency`` threads sending back to back for ``seconds``; QPS, latency percentiles, errors."""
    latencies: list[float] = []
    errors: list[str] = []
    sizes: list[int] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        while time.perf_counter() < deadline:
            with lock:
                text = next(texts)
            took, error, size = target.request(text)
            with lock:
                (errors.append(error) if error else latencies.append(took))
                sizes.append(size)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120)
    elapsed = time.perf_counter() - started
    row: dict[str, Any] = {"concurrency": concurrency, "ok": len(latencies), "errors": len(errors)}
    row["qps"] = len(latencies) / elapsed
    if latencies:
        row.update({f"p{p}_ms": 1000 * percentile(latencies, p) for p in (50, 95, 99)})
        row["mean_ms"] = 1000 * statistics.fmean(latencies)
    row["response_bytes"] = statistics.fmean(sizes) if sizes else 0
    row["first_errors"] = errors[:3]
    return row


def fresh_texts(start: int = 0) -> Iterator[str]:
    """Query texts that never repeat (no cache on either side can help), in the peer's style."""
    batch = 5000
    for offset in itertools.count(start, batch):
        yield from (f"{text}.{offset}" for text in make_queries(batch, seed=7 + offset))
