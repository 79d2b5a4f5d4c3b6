"""faster-whisper's worker count: a model replica per decode thread on the CPU, one model on the GPU."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import ctranslate2
import faster_whisper
import pytest

from tests.conftest import make_settings
from xmodal.encoders.speech import Transcriber


class RecordingWhisper:
    """Stands in for ``faster_whisper.WhisperModel``: records how it was built."""

    built: ClassVar[list[dict[str, object]]] = []

    def __init__(self, location: str, **options: object) -> None:
        self.built.append(options)


@pytest.mark.parametrize(("cuda_devices", "device", "workers"), [(0, "cpu", 4), (1, "cuda", 1)])
def test_whisper_replicas_follow_the_device(
    tmp_path: Path, tiny_clip_dir: Path, monkeypatch: pytest.MonkeyPatch, cuda_devices: int, device: str, workers: int
) -> None:
    RecordingWhisper.built = []
    monkeypatch.setattr(faster_whisper, "WhisperModel", RecordingWhisper)
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: cuda_devices)
    model = tmp_path / "whisper"
    model.mkdir()
    settings = make_settings(
        tmp_path / "home", tiny_clip_dir, device="auto", decode_workers=4, speech_model=f"faster-whisper:{model}"
    )
    transcriber = Transcriber.from_settings(settings)
    assert transcriber is not None
    transcriber.load()
    (options,) = RecordingWhisper.built
    assert options["device"] == device and options["num_workers"] == workers
