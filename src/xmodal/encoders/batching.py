"""Encoder batch sizes: fixed on the CPU; on a GPU they grow until memory runs out, then back off.

An out-of-memory error halves the batch and retries the same inputs, so nothing is lost; the size that failed
becomes the ceiling for the rest of the run. Each encoder and input kind has its own sizer (:class:`BatchSizers`):
CLIP on images, a text model and CLAP on audio need very different memory per input.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from xmodal.config import DevicePreference, Settings

log = logging.getLogger(__name__)

# How out-of-memory errors read when they do not arrive as torch.OutOfMemoryError: cuBLAS and cuDNN handles,
# nvJPEG, and CTranslate2 (faster-whisper) raise a plain RuntimeError with one of these in the message.
_OUT_OF_MEMORY_MARKERS = (
    "out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_NOT_ALLOC",
    "NVJPEG_STATUS_ALLOCATOR_FAILURE",
    "cudaErrorMemoryAllocation",
)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` means the device ran out of memory (worth retrying with a smaller batch)."""
    import torch

    if isinstance(error, torch.OutOfMemoryError):
        return True
    if not isinstance(error, RuntimeError):
        return False
    message = str(error)
    return any(marker.lower() in message.lower() for marker in _OUT_OF_MEMORY_MARKERS)


def release_cached_memory() -> None:
    """Hand cached CUDA blocks back to the driver (no-op without CUDA); call it outside any ``except`` block."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class BatchSizer:
    """The batch size of one encoder and input kind for one indexing run: it learns what the device can take."""

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

        parts: list[np.ndarray] = []
        start = 0
        while start < len(inputs):
            size = self.size
            out_of_memory = False
            try:
                parts.append(encode(inputs[start : start + size]))
            except RuntimeError as exc:  # torch.OutOfMemoryError is one
                if size == 1 or not is_out_of_memory(exc):
                    raise
                out_of_memory = True
            if out_of_memory:
                # Only here, after the except block: while it runs, the traceback still holds the failed batch's
                # tensors in its frames, and empty_cache could not release them.
                self._back_off(size)
                continue
            start += size
            if self.grow and self.size == size and self.size < self.maximum:
                self.size = min(self.maximum, self.size * 2)
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)

    def _back_off(self, failed: int) -> None:
        release_cached_memory()
        self.size = max(1, failed // 2)
        self.maximum = self.size  # never try the size that failed again in this run
        self.backoffs += 1
        log.warning("out of GPU memory at batch size %d; continuing with %d", failed, self.size)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


class BatchSizers:
    """One :class:`BatchSizer` per key (a space and the kind of input it encodes), made on first use."""

    def __init__(self, factory: Callable[[], BatchSizer]) -> None:
        self._factory = factory
        self._sizers: dict[Hashable, BatchSizer] = {}

    @classmethod
    def for_settings(cls, settings: Settings) -> BatchSizers:
        return cls(lambda: BatchSizer.for_settings(settings))

    def of(self, key: Hashable) -> BatchSizer:
        """The sizer for ``key``, e.g. ``("clip", Modality.IMAGE)``."""
        sizer = self._sizers.get(key)
        if sizer is None:
            sizer = self._sizers[key] = self._factory()
        return sizer

    @property
    def size(self) -> int:
        """The largest current batch size: how many files the indexer gathers before encoding them."""
        return max((sizer.size for sizer in self._sizers.values()), default=self._factory().size)
