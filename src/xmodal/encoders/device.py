"""Choosing the torch device and the numeric settings that go with it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from xmodal.config import DevicePreference, QueryPrecision
from xmodal.errors import ConfigError

if TYPE_CHECKING:  # imported by the functions: only a loaded model needs torch
    import torch


def resolve_device(preference: DevicePreference) -> torch.device:
    """CUDA when asked for or available under ``auto``; CPU otherwise."""
    import torch

    if preference is DevicePreference.CPU:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if preference is DevicePreference.CUDA:
        raise ConfigError("XMODAL_DEVICE=cuda, but torch sees no CUDA device. Use 'auto' or 'cpu'.")
    # Denormal floats make CPU matmuls several times slower (random-weight models are full of them).
    torch.set_flush_denormal(True)
    return torch.device("cpu")


@contextlib.contextmanager
def inference_context(device: torch.device) -> Iterator[None]:
    """``inference_mode``, plus fp16 autocast on CUDA."""
    import torch

    with torch.inference_mode():
        if device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                yield
        else:
            yield


def query_dtype(preference: QueryPrecision, device: torch.device) -> torch.dtype:
    """The dtype a model's copy for text queries runs at (see :class:`~xmodal.config.QueryPrecision`)."""
    import torch

    if preference == QueryPrecision.BFLOAT16:
        return torch.bfloat16
    if preference == QueryPrecision.AUTO and device.type == "cpu" and native_bfloat16():
        return torch.bfloat16
    return torch.float32


def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 products in hardware: AVX-512 BF16 or AMX (oneDNN also runs bfloat16 on
    plain AVX-512 by converting, which is slower than float32)."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # a torch without these probes: assume not
        return False
