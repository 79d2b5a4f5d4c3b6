"""Batch sizes: fixed on the CPU, growing on a GPU, halved (losing nothing) on out-of-memory errors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch

from xmodal.encoders.batching import BatchSizer


class FakeGpu:
    """An encoder that runs out of memory above ``fits`` inputs per batch and records the batch sizes it saw."""

    def __init__(self, fits: int) -> None:
        self.fits = fits
        self.batches: list[int] = []

    def __call__(self, inputs: Sequence[int]) -> np.ndarray:
        self.batches.append(len(inputs))
        if len(inputs) > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return np.asarray(inputs, dtype=np.float32).reshape(-1, 1)


def test_without_growth_the_batch_size_stays() -> None:
    gpu = FakeGpu(fits=1000)
    sizer = BatchSizer(8, maximum=64, grow=False)
    out = sizer.encode(gpu, list(range(30)))
    assert out.ravel().tolist() == list(range(30)) and gpu.batches == [8, 8, 8, 6]


def test_growth_doubles_up_to_the_maximum() -> None:
    gpu = FakeGpu(fits=1000)
    sizer = BatchSizer(4, maximum=16, grow=True)
    sizer.encode(gpu, list(range(60)))
    assert gpu.batches == [4, 8, 16, 16, 16] and sizer.size == 16


def test_out_of_memory_halves_the_batch_and_loses_nothing() -> None:
    gpu = FakeGpu(fits=12)
    sizer = BatchSizer(4, maximum=256, grow=True)
    out = sizer.encode(gpu, list(range(100)))
    assert out.ravel().tolist() == list(range(100))  # every input once, in order
    assert gpu.batches[:4] == [4, 8, 16, 8]  # 16 failed, retried as 8
    assert sizer.size == 8 and sizer.maximum == 8 and sizer.backoffs == 1  # never tries 16 again
    assert set(gpu.batches[4:]) <= {8, 4}


def test_out_of_memory_at_batch_size_one_is_raised() -> None:
    with pytest.raises(torch.OutOfMemoryError):
        BatchSizer(4, maximum=4, grow=False).encode(FakeGpu(fits=0), [1, 2, 3])


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="initial"):
        BatchSizer(0, maximum=4, grow=False)
