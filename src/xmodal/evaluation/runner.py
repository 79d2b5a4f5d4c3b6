"""Run a manifest's queries through the engine's real search path, per space, exactly, and with BM25.

The items are staged into a folder of their own (files linked under neutral names, texts written out), indexed
into the evaluation's home, and every query is asked of:

- ``xmodal``: the fused search, as users get it (filtered to the relevant items' modality);
- ``xmodal:<space>``: each space alone that embeds the query, through its index (ANN once it is large);
- ``exact:<space>``: the same space by brute force over the same stored vectors, so the loss due to the ANN
  index shows, and the gap to ``xmodal`` shows what fusion adds or costs;
- ``bm25``: the lexical space (SQLite FTS5 / PostgreSQL full text) over the same texts, for text queries.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xmodal.engine import Engine
from xmodal.errors import XmodalError
from xmodal.evaluation.captioning import CAPTION_METRICS, CaptionScorer, captioning_unavailable
from xmodal.evaluation.manifest import Manifest, ManifestQuery
from xmodal.evaluation.metrics import summarise
from xmodal.indexer.decode import modality_of, sniff
from xmodal.indexer.runner import Progress
from xmodal.modality import Modality
from xmodal.search.searcher import encode_part
from xmodal.spaces import VectorSpace

log = logging.getLogger(__name__)

K = 10
Ranked = list[str]


@dataclass
class EvalReport:
    """Per direction (or task), per source: the metrics of :func:`~xmodal.evaluation.metrics.summarise`."""

    items: int
    indexed: int
    failed: list[tuple[str, str]] = field(default_factory=list)
    results: dict[str, dict[str, dict[str, float | list[float]]]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # source -> why it could not be measured


def stage(manifest: Manifest, folder: Path) -> dict[str, str]:
    """Link item files (a caption as the file's sidecar) and write item texts into ``folder`` under neutral names;
    returns path -> item id (absolute paths, as the catalog records them)."""
    folder = folder.absolute()
    folder.mkdir(parents=True, exist_ok=True)
    staged: dict[str, str] = {}
    for number, item in enumerate(manifest.items.values()):
        if item.file is not None:
            target = folder / f"item{number:07d}{item.file.suffix.lower()}"
            if not target.exists():
                os.symlink(item.file.resolve(), target)
            if item.caption:
                target.with_suffix(".txt").write_text(item.caption, encoding="utf-8")
        else:
            target = folder / f"item{number:07d}.txt"
            target.write_text(item.text or "", encoding="utf-8")
        staged[str(target)] = item.id
    return staged


def query_modality(query: ManifestQuery) -> Modality:
    if query.file is None:
        return Modality.TEXT
    with query.file.open("rb") as handle:
        modality = modality_of(sniff(handle.read(8192)))
    if modality is None:
        raise XmodalError(f"query '{query.id}': {query.file} is not an image or audio file")
    return modality


class _Exact:
    """Brute-force search over one space's stored vectors, by item modality."""

    def __init__(self, space: VectorSpace, item_ids: dict[int, str], modalities: dict[str, Modality]) -> None:
        index = space.stored_index()
        ids, vectors = index.vectors() if index is not None else (np.zeros(0, np.int64), np.zeros((0, 1)))
        owners = space.catalog.resolve_vectors(ids.tolist())
        keep = [
            row
            for row, vector_id in enumerate(ids.tolist())
            if owners.get(vector_id) and owners[vector_id].item_id in item_ids
        ]
        self.owner = [item_ids[owners[int(ids[row])].item_id] for row in keep]
        self.vectors = vectors[keep] if keep else np.zeros((0, space.encoder.dim), np.float32)
        self.modality = np.array([modalities[owner].value for owner in self.owner])

    def holds(self, target: Modality | None) -> bool:
        """Whether this space has vectors of ``target`` items (any item when ``None``)."""
        return bool(len(self.owner)) and (target is None or bool((self.modality == target.value).any()))

    def ranked(self, query: np.ndarray, target: Modality | None, k: int) -> Ranked:
        mask = np.ones(len(self.owner), bool) if target is None else self.modality == target.value
        scores = self.vectors[mask] @ query
        owners = [owner for owner, keep in zip(self.owner, mask, strict=True) if keep]
        best: dict[str, float] = {}
        for owner, score in zip(owners, scores.tolist(), strict=True):
            best[owner] = max(best.get(owner, -np.inf), score)
        return sorted(best, key=lambda owner: (-best[owner], owner))[:k]


def evaluate(
    engine: Engine,
    manifest: Manifest,
    folder: Path,
    *,
    progress: Progress | None = None,
    index_progress: Progress | None = None,
) -> EvalReport:
    """Index the manifest's items into ``engine`` (staged in ``folder``) and measure every query's sources;
    ``index_progress`` follows the index run, ``progress`` the queries."""
    staged = stage(manifest, folder)
    index_report = engine.index([folder], progress=index_progress)
    report = EvalReport(len(manifest.items), index_report.indexed + index_report.unchanged, index_report.failures)
    states = engine.catalog.file_states()
    item_ids = {states[path].item_id: key for path, key in staged.items() if path in states}
    modalities = {key: Modality(states[path].modality) for path, key in staged.items() if path in states}
    exact = {space.name: _Exact(space, item_ids, modalities) for space in engine.spaces if space.size}
    runs: dict[str, dict[str, list[tuple[Ranked, frozenset[str]]]]] = defaultdict(lambda: defaultdict(list))
    captioning: dict[str, list[tuple[ManifestQuery, dict[str, Ranked]]]] = defaultdict(list)  # image -> text
    if progress is not None:
        progress.start(len(manifest.queries))
    for query in manifest.queries:
        modality = query_modality(query)
        targets = {modalities[key] for key in query.relevant if key in modalities}
        target = targets.pop() if len(targets) == 1 else None
        direction = query.task or f"{modality.value}->{target.value if target else 'any'}"
        answers, missing = _ask(engine, query, modality, target, exact, item_ids)
        for source, why in missing.items():
            report.unavailable.setdefault(f"{direction}: {source}", why)
        for source, ranked in answers.items():
            runs[direction][source].append((ranked, query.relevant))
        if modality is not Modality.TEXT and target is Modality.TEXT:
            captioning[direction].append((query, answers))
        if progress is not None:
            progress.advance(1)
    if progress is not None:
        progress.finish()
    report.results = {
        direction: {source: summarise(pairs) for source, pairs in sorted(by_source.items())}
        for direction, by_source in sorted(runs.items())
    }
    if captioning:
        _score_captioning(manifest, captioning, report)
    return report


def _text_of(manifest: Manifest, key: str) -> str:
    item = manifest.items.get(key)
    return (item.text or item.caption or "") if item is not None else ""


def _score_captioning(
    manifest: Manifest, captioning: dict[str, list[tuple[ManifestQuery, dict[str, Ranked]]]], report: EvalReport
) -> None:
    """Add BLEU-4, METEOR and CIDEr to each source of the image -> text directions (see :mod:`.captioning`)."""
    reason = captioning_unavailable()
    if reason is not None:
        for direction in captioning:
            report.unavailable.setdefault(f"{direction}: {', '.join(CAPTION_METRICS)}", reason)
        return
    with CaptionScorer() as scorer:
        for direction, asked in captioning.items():
            references = {q.id: [_text_of(manifest, key) for key in sorted(q.relevant)] for q, _ in asked}
            for source in report.results.get(direction, {}):
                firsts = {q.id: _text_of(manifest, a[source][0]) for q, a in asked if a.get(source)}
                report.results[direction][source].update(scorer.score(firsts, references))


def _ask(
    engine: Engine,
    query: ManifestQuery,
    modality: Modality,
    target: Modality | None,
    exact: dict[str, _Exact],
    item_ids: dict[int, str],
) -> tuple[dict[str, Ranked], dict[str, str]]:
    """Each source's ranked item ids for ``query``, and why the sources that could not answer did not."""
    inputs: dict[str, object] = {"text": query.text} if modality is Modality.TEXT else {modality.value: query.file}
    wanted = [target] if target is not None else None
    answers: dict[str, Ranked] = {}
    missing: dict[str, str] = {}
    try:  # decoded once (an image or audio file), then asked of every source
        parsed = engine.build_query(**inputs).parts[0]  # type: ignore[arg-type]
    except XmodalError as exc:
        return answers, {"xmodal": str(exc).splitlines()[0]}

    def run(source: str, **options: object) -> None:
        try:
            results = engine.search(parts=[parsed], k=K, modalities=wanted, **options)
        except XmodalError as exc:
            missing[source] = str(exc).splitlines()[0]
            return
        answers[source] = [item_ids[r.item_id] for r in results if r.item_id in item_ids]

    run("xmodal")
    for space in engine.spaces:
        if not space.embeds(modality) or space.name not in exact or not exact[space.name].holds(target):
            continue
        run(f"xmodal:{space.name}", space=space.name)
        if f"xmodal:{space.name}" in answers:
            answers[f"exact:{space.name}"] = exact[space.name].ranked(encode_part(space, parsed), target, K)
    if modality is Modality.TEXT and engine.settings.lexical:
        run("bm25", space="lexical")
    return answers, missing
