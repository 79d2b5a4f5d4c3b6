"""Audio helpers shared by the audio encoders: resampling and windowing of mono float32 signals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class AudioWindow:
    """A piece of a signal; ``start_ms``/``end_ms`` locate it in the original audio."""

    start_ms: int
    end_ms: int
    samples: np.ndarray


def resample(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """``samples`` (mono float32) at ``target_rate``, with soxr's high-quality resampler."""
    if rate == target_rate or samples.size == 0:
        return np.ascontiguousarray(samples, dtype=np.float32)
    import soxr

    return soxr.resample(samples.astype(np.float32), rate, target_rate).astype(np.float32)


def windows(samples: np.ndarray, rate: int, *, window_s: float, hop_s: float) -> list[AudioWindow]:
    """Overlapping windows covering the whole signal; the last one may be shorter. Never empty for a non-empty
    signal, and never longer than ``window_s``, so encoders need no random crop."""
    size = max(1, round(window_s * rate))
    hop = max(1, round(hop_s * rate))
    pieces: list[AudioWindow] = []
    start = 0
    while True:
        end = min(start + size, len(samples))
        pieces.append(AudioWindow(start * 1000 // rate, end * 1000 // rate, samples[start:end]))
        if end >= len(samples):
            return pieces
        start += hop
