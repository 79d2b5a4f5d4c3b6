"""How well a space's two towers agree: its text embedding of an item's caption against the item's own vector.

A CLIP (or CLAP) space answers text queries about images (or sounds) only as well as its text tower and its image
tower agree. That is measured without any labels from what is stored: an image's caption, embedded as a text
query, should score its own image above the other images. ``agreement`` is that AUC over a sample of captioned
items (1.0: every caption finds its image first; 0.5: chance, as with random weights or a model that does not
know the captions' language), beside the mean and spread of unrelated caption-image pairs (the cross-modal null).
Kept in the space's manifest at publication (``calibration["pairs"]["text->image"]``); fusion gives the space's
cross-modal evidence a weight of ``2 * agreement - 1``, and none when the agreement is not clearly above chance.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MIN_PAIRS = 8  # fewer captioned items: nothing measured (the space keeps full weight)
MIN_STD = 1e-3
CHANCE_SE = 3.0  # an agreement this many standard errors above chance, or less, is chance


def measure_agreement(queries: np.ndarray, items: np.ndarray) -> dict[str, Any] | None:
    """``queries[i]`` (a caption embedded as a query) describes ``items[i]`` (its item's vector in the space):
    ``{"agreement": AUC, "mean": ..., "std": ..., "pairs": n}``, or ``None`` with fewer than ``MIN_PAIRS``."""
    count = len(queries)
    if count < MIN_PAIRS or len(items) != count:
        return None
    scores = np.asarray(queries, dtype=np.float64) @ np.asarray(items, dtype=np.float64).T
    own = np.diag(scores)
    unrelated = ~np.eye(count, dtype=bool)
    below = (scores < own[:, None]) & unrelated
    ties = (scores == own[:, None]) & unrelated
    auc = float((below.sum() + 0.5 * ties.sum()) / unrelated.sum())
    others = scores[unrelated]
    return {"agreement": auc, "mean": float(others.mean()), "std": float(max(others.std(), MIN_STD)), "pairs": count}


def agreement_weight(calibration: dict[str, Any], pair: str) -> float:
    """The weight of a space's ``pair`` (``"text->image"``) evidence: ``2 * AUC - 1`` in [0, 1]; 0 when the AUC is
    within ``CHANCE_SE`` standard errors of chance (each caption's rank of its own item is uniform under chance,
    so the mean over ``n`` captions has a standard error of ``sqrt(1 / (12 n))``: 0.02 for 200); 1 unmeasured."""
    measured = calibration.get("pairs", {}).get(pair)
    if not measured or "agreement" not in measured:
        return 1.0
    auc, count = float(measured["agreement"]), max(1, int(measured.get("pairs", 1)))
    if auc - 0.5 < CHANCE_SE * math.sqrt(1 / (12 * count)):
        return 0.0
    return float(min(1.0, 2 * auc - 1))
