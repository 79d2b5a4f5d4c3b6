"""Prometheus metrics of one app (its own registry: no process-global state).

Request latency per route, search latency per stage (encode, ANN, fusion, rerank, metadata), and, read at
scrape time, each space's index size and the indexer's totals from the catalog.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from xmodal.engine import Engine

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _EngineCollector(Collector):
    """Index sizes and indexer counters, read from the engine when Prometheus scrapes."""

    def __init__(self, engine: Callable[[], Engine | None]) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        engine = self._engine()
        if engine is None:
            return
        vectors = GaugeMetricFamily("xmodal_index_vectors", "Live vectors per space.", labels=["space"])
        removed = GaugeMetricFamily("xmodal_index_tombstones", "Removed vectors awaiting compaction.", labels=["space"])
        for space in engine.spaces:
            index = space.stored_index()
            vectors.add_metric([space.name], index.ntotal if index else 0)
            removed.add_metric([space.name], index.tombstones if index else 0)
        yield vectors
        yield removed
        files = CounterMetricFamily(
            "xmodal_indexer_files", "Files by outcome over finished index runs.", labels=["outcome"]
        )
        totals = engine.catalog.run_totals()
        for outcome in ("indexed", "updated", "unchanged", "skipped", "failed", "reused", "pruned"):
            files.add_metric([outcome], totals.get(outcome, 0))
        yield files
        yield CounterMetricFamily(
            "xmodal_indexer_vectors_added",
            "Vectors added over finished index runs.",
            value=totals.get("vectors_added", 0),
        )


class ApiMetrics:
    """The app's registry and instruments."""

    def __init__(self, engine: Callable[[], Engine | None]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "xmodal_http_request_seconds",
            "HTTP request latency.",
            ["method", "route", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.search_stages = Histogram(
            "xmodal_search_stage_seconds",
            "Search latency per stage.",
            ["stage"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_EngineCollector(engine))

    def observe_search(self, timings: dict[str, float]) -> None:
        for stage, seconds in timings.items():
            self.search_stages.labels(stage).observe(seconds)

    async def middleware(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")  # the route's template: /items/{item_id}, never the id
        self.requests.labels(request.method, template, str(response.status_code)).observe(time.perf_counter() - started)
        return response
