"""Calibration per (query modality, item modality) pair of a space: what a random, unrelated pair scores.

One null distribution per space mixes image-image and text-text pairs; in CLIP a text query against images scores
well below that mean, so cross-modal evidence would be z-scored low. Here the null of ``text -> image`` is
measured from stored text vectors against stored image vectors (or from ``prompts``, generic query vectors, when
the space holds no texts), likewise ``audio -> text`` and every other pair present.

The table is plain data (``{"text->image": [mean, std], ...}``), fit to be kept in a space's manifest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

PAIRS = 2000
MIN_STD = 1e-3

Table = dict[str, tuple[float, float]]


def pair_key(query_modality: str, item_modality: str) -> str:
    return f"{query_modality}->{item_modality}"


def calibrate_pairs(
    vectors: np.ndarray,
    modalities: Sequence[str],
    *,
    query_modalities: Sequence[str] | None = None,
    prompts: Mapping[str, np.ndarray] | None = None,
    pairs: int = PAIRS,
    seed: int = 0,
) -> Table:
    """(mean, std) of inner products of random unrelated pairs, per (query modality, item modality).

    ``vectors[i]`` came from an input of modality ``modalities[i]`` (an image's pixels: ``image``; its caption:
    ``text``). Queries of modality q are the stored vectors of modality q, or ``prompts[q]`` when none are stored;
    ``query_modalities`` limits the query side (default: every modality present or prompted). A vector is never
    paired with itself."""
    labels = np.asarray(modalities)
    if len(labels) != len(vectors):
        raise ValueError(f"{len(vectors)} vectors but {len(labels)} modalities")
    rng = np.random.default_rng(seed)
    present = sorted(set(labels.tolist()))
    asked = list(query_modalities) if query_modalities is not None else sorted(set(present) | set(prompts or {}))
    table: Table = {}
    for query_modality in asked:
        stored = np.flatnonzero(labels == query_modality)
        if len(stored):
            queries, query_rows = vectors, stored
        elif prompts and query_modality in prompts and len(prompts[query_modality]):
            queries, query_rows = np.asarray(prompts[query_modality]), None
        else:
            continue
        for item_modality in present:
            items = np.flatnonzero(labels == item_modality)
            left = rng.integers(0, len(queries) if query_rows is None else len(query_rows), size=pairs)
            right = items[rng.integers(0, len(items), size=pairs)]
            left_rows = left if query_rows is None else query_rows[left]
            if query_rows is not None:
                same = left_rows == right
                if same.all():
                    continue  # one vector alone: no unrelated pair
                left_rows, right = left_rows[~same], right[~same]
            scores = np.einsum("ij,ij->i", queries[left_rows], vectors[right])
            table[pair_key(query_modality, item_modality)] = (float(scores.mean()), float(max(scores.std(), MIN_STD)))
    return table


def calibrated(
    scores: np.ndarray | float,
    table: Mapping[str, Sequence[float]],
    query_modality: str,
    item_modality: str,
    default: tuple[float, float],
) -> np.ndarray:
    """Raw inner products as standard deviations above a random pair of this (query, item) modality pair;
    ``default`` (the space's overall mean and std) when the table lacks the pair."""
    mean, std = table.get(pair_key(query_modality, item_modality), default)
    return (np.asarray(scores, dtype=np.float64) - mean) / std
