"""``xmodal eval --fit-fusion``: a weight per space and query modality, fitted on a labelled manifest.

The default fusion needs no fitting (see :mod:`xmodal.search.fusion`); where labels exist, a few weights can still
help (a space that is weak on this data). Per query modality (text, image, audio), each space's weight is chosen
from ``GRID`` by coordinate ascent (every space in turn, ``ROUNDS`` times) to maximise the mean of R@1, R@5 and
R@10 of the fused search over the manifest's queries of that modality, through the real search path. Weights are
kept only when they beat all-ones; they go into the home's ``fusion.json``, which the search reads at start (no
file: every space counts 1).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from xmodal.engine import Engine
from xmodal.errors import XmodalError
from xmodal.evaluation.manifest import Manifest, ManifestQuery
from xmodal.evaluation.metrics import recall_at
from xmodal.evaluation.runner import K, query_modality, stage
from xmodal.modality import Modality
from xmodal.search.fusion import Weights, save_fitted_weights
from xmodal.search.query import QueryPart

GRID = (0.0, 0.25, 0.5, 1.0, 2.0)
ROUNDS = 2
LEXICAL = "lexical"


@dataclass
class FitReport:
    """Per query modality: the fitted weights, and the objective (mean of R@1/5/10) before and after."""

    weights: Weights = field(default_factory=dict)
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    queries: dict[str, int] = field(default_factory=dict)
    written: Path | None = None


@dataclass(frozen=True, slots=True)
class _Asked:
    part: QueryPart
    relevant: frozenset[str]
    target: Modality | None


def fit_fusion(
    engine: Engine, manifest: Manifest, folder: Path, *, save: bool = True, source: str | None = None
) -> FitReport:
    """Fit the weights on ``manifest`` (its items staged in ``folder`` and indexed, as :func:`evaluate` does) and,
    when ``save``, write those that help into the engine's home (``source``: the manifest's path, recorded)."""
    staged = stage(manifest, folder)
    engine.index([folder])
    states = engine.catalog.file_states()
    keys = {states[path].item_id: key for path, key in staged.items() if path in states}
    modalities = {key: Modality(states[path].modality) for path, key in staged.items() if path in states}
    asked: dict[str, list[_Asked]] = defaultdict(list)
    for query in manifest.queries:
        kind = query_modality(query)
        targets = {modalities[key] for key in query.relevant if key in modalities}
        try:
            part = _part(engine, query, kind)
        except XmodalError:
            continue  # the runner reports it; nothing to fit on
        asked[kind.value].append(_Asked(part, query.relevant, targets.pop() if len(targets) == 1 else None))
    spaces = [space.name for space in engine.spaces if space.size] + ([LEXICAL] if engine.settings.lexical else [])
    report = FitReport()
    searcher = engine.searcher
    kept = dict(searcher.fusion_weights)
    try:
        for kind, queries in sorted(asked.items()):
            weights = dict.fromkeys(spaces, 1.0)
            score = _objective(engine, kind, weights, queries, keys)
            report.before[kind], report.queries[kind] = score, len(queries)
            for _ in range(ROUNDS):
                for space in spaces:
                    for value in GRID:
                        trial = {**weights, space: value}
                        if trial == weights:
                            continue
                        tried = _objective(engine, kind, trial, queries, keys)
                        if tried > score + 1e-9:
                            weights, score = trial, tried
            report.after[kind] = score
            if score > report.before[kind] + 1e-9:
                report.weights[kind] = weights
    finally:
        searcher.fusion_weights = kept
    if save:
        merged = {**kept, **report.weights}
        about = {"manifest": source, "objective": "mean of R@1, R@5, R@10", "before": report.before}
        about["after"] = report.after
        report.written = save_fitted_weights(engine.settings.home, merged, about)
        searcher.fusion_weights = merged
    return report


def _part(engine: Engine, query: ManifestQuery, kind: Modality) -> QueryPart:
    inputs: dict[str, object] = {"text": query.text} if kind is Modality.TEXT else {kind.value: query.file}
    return engine.build_query(**inputs).parts[0]  # type: ignore[arg-type]


def _objective(
    engine: Engine, kind: str, weights: dict[str, float], queries: list[_Asked], keys: dict[int, str]
) -> float:
    engine.searcher.fusion_weights = {kind: weights}
    total = 0.0
    for asked in queries:
        wanted = [asked.target] if asked.target is not None else None
        ranked = [
            keys[r.item_id] for r in engine.search(parts=[asked.part], k=K, modalities=wanted) if r.item_id in keys
        ]
        total += sum(recall_at(ranked, asked.relevant, k) for k in (1, 5, 10)) / 3
    return total / max(1, len(queries))
