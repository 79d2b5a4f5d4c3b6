"""Which FAISS index a space uses, how it is built, and how its search parameters are tuned.

The choice is a pure function of the vector count, the dimension and a memory budget, as in autofaiss:
exact search while it is cheap, HNSW while its graph and vectors fit the budget, then OPQ + IVF-PQ trained on a
sample. Tuning picks the cheapest ``efSearch`` / ``nprobe`` whose recall at the fetch size searches really use
(``tune_k``: the candidates a space contributes, over-fetched) against exact search reaches the target on
held-out queries, and stops raising the effort once recall stops improving (IVF-PQ's quantisation caps it below
the target, and scanning every list would buy nothing); the choice is stored with the index.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from enum import StrEnum

import faiss
import numpy as np

log = logging.getLogger(__name__)

TUNE_K = 10  # the smallest fetch size tuned for (and the default)
SEARCH_OVERFETCH = 4  # a space is first asked for this many times the vectors it must return (chunks, filters)
TUNE_MIN_GAIN = 0.002  # a step of effort that gains less recall than this ends the tuning
_EF_SEARCH_STEPS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048)
_ID_BYTES = 16
_OPQ_ITERATIONS = 10
_OPQ_TRAIN_POINTS = 25_000  # an external id in the IDMap2 array and its reverse map entry


class IndexKind(StrEnum):
    FLAT = "flat"
    HNSW = "hnsw"
    IVFPQ = "ivfpq"


@dataclass(frozen=True, slots=True)
class IndexPolicy:
    """Thresholds and budget that choose an index (from the settings' ``index_*`` fields)."""

    exact_below: int = 50_000
    ivf_above: int = 2_000_000
    memory_budget_bytes: int = 8 * 2**30
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    target_recall: float = 0.95
    tune_queries: int = 200
    tune_k: int = TUNE_K  # the fetch size searches use (the settings: fusion_candidates x SEARCH_OVERFETCH)
    train_sample: int = 200_000
    compact_ratio: float = 0.1


@dataclass(frozen=True, slots=True)
class IndexPlan:
    """An index type and its FAISS factory key, e.g. ``HNSW32`` or ``OPQ16_64,IVF1024,PQ16``."""

    kind: IndexKind
    key: str
    bytes_per_vector: int

    def __post_init__(self) -> None:
        if self.kind is IndexKind.FLAT and self.key != "Flat":
            raise ValueError("a flat plan has the key 'Flat'")


def _hnsw_bytes(dim: int, m: int) -> int:
    # vectors + two levels' worth of neighbour links on average (level 0 holds 2M links) + ids
    return 4 * dim + 4 * 2 * m + 4 * m // 2 + _ID_BYTES


def choose_index(count: int, dim: int, policy: IndexPolicy) -> IndexPlan:
    """The index for ``count`` vectors of ``dim`` dimensions within ``policy``'s memory budget."""
    if count < 0 or dim <= 0:
        raise ValueError(f"need a vector count >= 0 and a dimension > 0, got {count} and {dim}")
    flat_bytes = 4 * dim + _ID_BYTES
    if count < policy.exact_below:
        return IndexPlan(IndexKind.FLAT, "Flat", flat_bytes)
    hnsw_bytes = _hnsw_bytes(dim, policy.hnsw_m)
    if count < policy.ivf_above and count * hnsw_bytes <= policy.memory_budget_bytes:
        return IndexPlan(IndexKind.HNSW, f"HNSW{policy.hnsw_m}", hnsw_bytes)
    # IVF-PQ: about 4 * sqrt(n) lists (a power of two), the most PQ bytes that fit, 4 dimensions per byte
    # (and no more lists than the training sample fills with 39 points each, faiss's minimum)
    nlist = int(2 ** round(math.log2(max(16.0, 4 * math.sqrt(count)))))
    while nlist > 16 and nlist * 39 > min(count, policy.train_sample):
        nlist //= 2
    for code_bytes in (64, 48, 32, 24, 16, 8, 4):  # at least two dimensions per code byte
        if 2 * code_bytes <= dim and count * (code_bytes + _ID_BYTES) <= policy.memory_budget_bytes:
            break
    rotated = min(4 * code_bytes, dim - dim % code_bytes)
    key = f"OPQ{code_bytes}_{rotated},IVF{nlist},PQ{code_bytes}"
    return IndexPlan(IndexKind.IVFPQ, key, code_bytes + _ID_BYTES)


def kind_of(index: faiss.Index) -> IndexKind:
    """The kind of a (possibly id-mapped) index."""
    inner = _unwrap(index)
    if isinstance(inner, faiss.IndexHNSW):
        return IndexKind.HNSW
    if isinstance(inner, (faiss.IndexPreTransform, faiss.IndexIVF)):
        return IndexKind.IVFPQ
    return IndexKind.FLAT


def _unwrap(index: faiss.Index) -> faiss.Index:
    index = faiss.downcast_index(index)
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        return faiss.downcast_index(index.index)
    return index


def empty_index(
    plan: IndexPlan, dim: int, policy: IndexPolicy, training: np.ndarray | None = None, *, id_map: bool = True
) -> faiss.Index:
    """An empty index for ``plan``, id-mapped unless ``id_map`` is False and the index takes labels of its own
    (IVF does; HNSW always gets a map); IVF-PQ needs ``training`` vectors (trained on the GPU if any)."""
    if plan.kind is IndexKind.FLAT:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if plan.kind is IndexKind.HNSW:
        inner = faiss.IndexHNSWFlat(dim, policy.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = policy.hnsw_ef_construction
        return faiss.IndexIDMap2(inner)
    if training is None or len(training) == 0:
        raise ValueError("an IVF-PQ index needs training vectors")
    inner = faiss.index_factory(dim, plan.key, faiss.METRIC_INNER_PRODUCT)
    if isinstance(inner, faiss.IndexPreTransform):
        rotation = faiss.downcast_VectorTransform(inner.chain.at(0))
        rotation.niter = _OPQ_ITERATIONS  # faiss's 50 take many minutes on a CPU; the rotation settles sooner
        rotation.max_train_points = _OPQ_TRAIN_POINTS
    ivf = faiss.extract_index_ivf(inner)
    if hasattr(ivf, "do_polysemous_training"):
        ivf.do_polysemous_training = False  # minutes of training for codes no search here uses
    # k-means on the GPU; the trained index stays on the CPU. The IVF only borrows a raw pointer to the GPU index,
    # so this function holds it (and its StandardGpuResources) for the training and releases both afterwards.
    gpu_clustering = faiss.index_cpu_to_all_gpus(faiss.IndexFlatL2(ivf.d)) if faiss.get_num_gpus() > 0 else None
    ivf.clustering_index = gpu_clustering
    try:
        inner.train(np.ascontiguousarray(training, dtype=np.float32))
    finally:
        ivf.clustering_index = None
        del gpu_clustering
    if not id_map:
        return inner
    ivf.make_direct_map()  # lets the id map reconstruct (approximate) vectors by id
    return faiss.IndexIDMap2(inner)


@dataclass(slots=True)
class SearchTuning:
    """Search parameters chosen for an index and the recall they reached on sample queries."""

    ef_search: int | None = None
    nprobe: int | None = None
    target_recall: float | None = None
    measured_recall: float | None = None
    tuned_at: int = 0  # vector count when tuned

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "ef_search": self.ef_search,
            "nprobe": self.nprobe,
            "target_recall": self.target_recall,
            "measured_recall": self.measured_recall,
            "tuned_at": self.tuned_at,
        }


@dataclass(slots=True)
class _Params:
    """faiss search parameters plus the objects they point to (kept alive for the call)."""

    params: faiss.SearchParameters | None
    keep: list[object] = field(default_factory=list)


def search_parameters(index: faiss.Index, tuning: SearchTuning, selector: faiss.IDSelector | None) -> _Params:
    """Parameters for one search of ``index`` (id-mapped): tuned effort plus an id selector over external ids."""
    kind = kind_of(index)
    if kind is IndexKind.FLAT:
        return _Params(faiss.SearchParameters(sel=selector) if selector is not None else None, [selector])
    if kind is IndexKind.HNSW:
        params = faiss.SearchParametersHNSW()
        params.efSearch = tuning.ef_search or _unwrap(index).hnsw.efSearch
        if selector is not None:
            params.sel = selector
        return _Params(params, [selector])
    ivf_params = faiss.SearchParametersIVF()
    ivf_params.nprobe = tuning.nprobe or faiss.extract_index_ivf(index).nprobe
    inner = _unwrap(index)
    if not isinstance(inner, faiss.IndexPreTransform):
        if selector is not None:
            ivf_params.sel = selector  # the id map translates it
        return _Params(ivf_params, [selector])
    # a pre-transform hands its own parameters to the IVF, so the selector must speak internal ids already
    outer = faiss.SearchParametersPreTransform()
    outer.index_params = ivf_params
    keep: list[object] = [selector, ivf_params]
    mapped = faiss.downcast_index(index)
    if selector is not None and isinstance(mapped, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        translated = faiss.IDSelectorTranslated(mapped.id_map, selector)
        ivf_params.sel = translated
        keep.append(translated)
    elif selector is not None:  # a segment's index: labels are row numbers already
        ivf_params.sel = selector
    return _Params(outer, keep)


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row numbers of the ``k`` best inner products of each query among ``vectors`` (exact)."""
    _, rows = faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    return rows


def tune(
    index: faiss.Index,
    vectors: np.ndarray,
    ids: np.ndarray,
    queries: np.ndarray,
    *,
    target_recall: float,
    k: int = TUNE_K,
    min_gain: float = TUNE_MIN_GAIN,
) -> SearchTuning:
    """The cheapest search effort whose recall@``k`` on ``queries`` reaches ``target_recall``, or, when recall
    stops improving below it (by less than ``min_gain`` from one step to the next), the effort where it stopped.

    ``k`` should be the fetch size searches use: an effort that finds the 10 nearest may miss much of the 400 a
    fused search fetches. ``vectors`` / ``ids`` are exactly what ``index`` holds (the ground truth is an exact
    search over them); ``queries`` should be held out of the index: a stored vector finds its own neighbourhood
    too easily, and tuning on those overestimates recall (0.95 tuned that way was 0.91 on held-out GloVe words).
    """
    kind = kind_of(index)
    tuning = SearchTuning(target_recall=target_recall, tuned_at=int(index.ntotal))
    k = min(max(k, 1), len(ids) - 1) if len(ids) > 1 else 1
    if kind is IndexKind.FLAT or len(ids) <= TUNE_K or len(queries) == 0:
        tuning.measured_recall = 1.0
        return tuning
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    truth = [set(row.tolist()) for row in ids[exact_neighbours(vectors, queries, k)]]
    steps = _EF_SEARCH_STEPS if kind is IndexKind.HNSW else _nprobe_steps(faiss.extract_index_ivf(index).nlist)
    if kind is IndexKind.HNSW:
        steps = tuple(step for step in steps if step >= k) or steps[-1:]  # HNSW returns at most efSearch
    recall, previous = 0.0, None
    for step in steps:
        effort = (tuning.ef_search, tuning.nprobe)
        if kind is IndexKind.HNSW:
            tuning.ef_search = step
        else:
            tuning.nprobe = step
        _, found = index.search(queries, k, params=search_parameters(index, tuning, None).params)
        hits = [len(expected & set(row.tolist())) for row, expected in zip(found, truth, strict=True)]
        measured = float(np.mean(hits)) / k
        if previous is not None and measured - previous < min_gain:
            tuning.ef_search, tuning.nprobe = effort  # more effort bought nothing: keep the cheaper one
            log.info("recall@%d stopped improving at %.3f (target %.3f): more effort buys nothing", k, recall,
                     target_recall)  # fmt: skip
            break
        recall = previous = measured
        if recall >= target_recall:
            break
    tuning.measured_recall = recall
    if recall < target_recall:
        log.warning("index reached recall@%d %.3f at most, below the target %.3f", k, recall, target_recall)
    return tuning


def _nprobe_steps(nlist: int) -> list[int]:
    steps, step = [], 1
    while step < nlist:
        steps.append(step)
        step *= 2
    return [*steps, nlist]


def index_bytes(index: faiss.Index) -> int:
    """Bytes the index takes when serialised (about what it takes in memory)."""
    return int(faiss.serialize_index(index).nbytes)


GPU_MAX_K = 2048  # faiss-gpu's largest k and nprobe (GPU_MAX_SELECTION_K); above it the CPU answers


class GpuReplica:
    """A copy of a flat or IVF index on every GPU (faiss-gpu), for searches that need no id selector.

    faiss-gpu cannot filter by id and has no HNSW, so filtered searches, tombstoned indexes and graphs stay on the
    CPU, and so do searches for more than ``GPU_MAX_K`` neighbours or with more probes than that (faiss-gpu
    refuses them). The copy is made on first use and again after the index changes; IVF-PQ copies compute their
    look-up tables in float16 (PQ64's float32 tables exceed a GPU block's shared memory, and faiss then refuses
    the copy). If faiss cannot make a copy, the index is searched on the CPU from then on, with one warning.
    """

    def __init__(self) -> None:
        self._copy: faiss.Index | None = None
        self._made_for: int | None = None
        self._unusable = False

    def search(
        self, index: faiss.Index, version: int, tuning: SearchTuning, queries: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(scores, ids) from the GPUs, or ``None`` when the CPU must answer."""
        if self._unusable or kind_of(index) is IndexKind.HNSW or faiss.get_num_gpus() == 0:
            return None
        if k > GPU_MAX_K or (tuning.nprobe or 0) > GPU_MAX_K:
            return None
        if self._copy is None or self._made_for != version:
            self._copy = None  # free the stale copy's GPU memory before making the new one
            try:
                self._copy, self._made_for = self._make_copy(index, tuning), version
            except (RuntimeError, AttributeError) as exc:
                log.warning("searching on the CPU: faiss could not copy the index to the GPU (%s)", exc)
                self._unusable = True
                return None
        try:
            return self._copy.search(queries, k)
        except RuntimeError as exc:  # e.g. out of GPU memory for a large batch of queries: the CPU answers it
            log.warning("searching on the CPU: the GPU search failed (%s)", exc)
            return None

    @staticmethod
    def _make_copy(index: faiss.Index, tuning: SearchTuning) -> faiss.Index:
        options = faiss.GpuMultipleClonerOptions()
        options.useFloat16 = kind_of(index) is IndexKind.IVFPQ  # flat copies keep exact float32 vectors
        copy = faiss.index_cpu_to_all_gpus(index, co=options)
        if tuning.nprobe:
            faiss.GpuParameterSpace().set_index_parameter(copy, "nprobe", tuning.nprobe)
        return copy
