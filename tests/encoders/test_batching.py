"""Batch sizes: fixed on the CPU, growing on a GPU, halved (losing nothing) on out-of-memory errors."""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from xmodal.encoders.batching import BatchSizer, BatchSizers


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


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
        RuntimeError("CUDA failed with error out of memory"),  # CTranslate2
        RuntimeError("cuDNN error: CUDNN_STATUS_NOT_ALLOC"),
    ],
)
def test_out_of_memory_as_a_plain_runtime_error_backs_off_too(error: RuntimeError) -> None:
    batches: list[int] = []

    def encode(inputs: Sequence[int]) -> np.ndarray:
        batches.append(len(inputs))
        if len(inputs) > 2:
            raise error
        return np.asarray(inputs, dtype=np.float32).reshape(-1, 1)

    sizer = BatchSizer(8, maximum=8, grow=False)
    assert sizer.encode(encode, list(range(9))).ravel().tolist() == list(range(9))
    assert batches[:3] == [8, 4, 2] and sizer.backoffs == 2


def test_other_runtime_errors_are_not_retried() -> None:
    calls: list[int] = []

    def broken(inputs: Sequence[int]) -> np.ndarray:
        calls.append(len(inputs))
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        BatchSizer(8, maximum=8, grow=False).encode(broken, list(range(9)))
    assert calls == [8]


def test_the_cache_is_emptied_once_the_failed_batch_is_released(monkeypatch: pytest.MonkeyPatch) -> None:
    """empty_cache inside the ``except`` block frees nothing: the traceback still holds the batch's tensors."""

    class DeviceBuffer:
        """Stands for the activations of the batch that ran out of memory."""

    alive: list[weakref.ref[DeviceBuffer]] = []
    held_at_empty_cache: list[bool] = []

    def encode(inputs: Sequence[int]) -> np.ndarray:
        activations = DeviceBuffer()
        alive.append(weakref.ref(activations))
        if len(inputs) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return np.asarray(inputs, dtype=np.float32).reshape(-1, 1)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: held_at_empty_cache.append(alive[0]() is not None))
    BatchSizer(8, maximum=8, grow=False).encode(encode, list(range(8)))
    assert held_at_empty_cache == [False]


def test_each_encoder_and_input_kind_learns_its_own_batch_size() -> None:
    sizers = BatchSizers(lambda: BatchSizer(8, maximum=64, grow=True))
    images, texts = sizers.of(("clip", "image")), sizers.of(("text", "text"))
    images.encode(FakeGpu(fits=12), list(range(40)))  # CLIP on images runs out of memory above 12
    texts.encode(FakeGpu(fits=1000), list(range(200)))  # the text model does not
    assert images.size == 8 and images.maximum == 8
    assert texts.size == 64
    assert sizers.of(("clip", "image")) is images
    assert sizers.size == 64  # the indexer gathers enough files for the largest
