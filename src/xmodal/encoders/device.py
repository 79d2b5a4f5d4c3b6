"""Choosing the torch device and the numeric settings that go with it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from xmodal.config import DevicePreference
from xmodal.errors import ConfigError


def resolve_device(preference: DevicePreference) -> torch.device:
    """CUDA when asked for or available under ``auto``; CPU otherwise."""
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
    with torch.inference_mode():
        if device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                yield
        else:
            yield
