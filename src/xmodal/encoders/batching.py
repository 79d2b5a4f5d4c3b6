"""Encoder batch sizes: fixed on the CPU; on a GPU they grow until memory runs out, then back off.

A CUDA out-of-memory error halves the batch and retries the same inputs, so nothing is lost; the size that
failed becomes the ceiling for the rest of the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from xmodal.config import DevicePreference, Settings

log = logging.getLogger(__name__)


class BatchSizer:
    """The batch size of one indexing run (one per run: it learns what the device can take)."""

    def __init__(self, initial: int, *, maximum: int, grow: bool) -> None:
        if initial < 1 or maximum < initial:
            raise ValueError(f"need 1 <= initial ({initial}) <= maximum ({maximum})")
        self.size = initial
        self.maximum = maximum
        self.grow = grow
        self.backoffs = 0

    @classmethod
    def for_settings(cls, settings: Settings) -> BatchSizer:
        """Start at ``batch_size``; grow up to ``max_batch_size`` when encoders run on CUDA and it is allowed."""
        on_gpu = settings.device is not DevicePreference.CPU and _cuda_available()
        maximum = max(settings.batch_size, settings.max_batch_size)
        return cls(settings.batch_size, maximum=maximum, grow=settings.auto_batch_size and on_gpu)

    def encode(self, encode: Callable[[Sequence[Any]], np.ndarray], inputs: Sequence[Any]) -> np.ndarray:
        """``encode`` over ``inputs`` in batches of the current size, backing off on out-of-memory errors."""
        import torch  # loaded by the encoder already; imported here so that importing xmodal stays light

        parts: list[np.ndarray] = []
        start = 0
        while start < len(inputs):
            size = self.size
            try:
                parts.append(encode(inputs[start : start + size]))
            except torch.OutOfMemoryError:
                if size == 1:
                    raise
                self._back_off(size)
                continue
            start += size
            if self.grow and self.size == size and self.size < self.maximum:
                self.size = min(self.maximum, self.size * 2)
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)

    def _back_off(self, failed: int) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.size = max(1, failed // 2)
        self.maximum = self.size  # never try the size that failed again in this run
        self.backoffs += 1
        log.warning("out of GPU memory at batch size %d; continuing with %d", failed, self.size)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
