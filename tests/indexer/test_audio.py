"""Audio indexing: corrupt files are listed, speech is transcribed with timestamps, non-speech is not."""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import synth_audio
from xmodal.engine import Engine

FREEDESKTOP = Path("/usr/share/sounds/freedesktop/stereo")
TUXPAINT = Path("/usr/share/tuxpaint/stamps")


def _flac_claiming(seconds: int, rate: int = 8000) -> bytes:
    """A one-second silent FLAC whose header says it lasts ``seconds``."""
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(rate, dtype=np.int16), rate, format="FLAC")
    data = bytearray(buffer.getvalue())
    total = seconds * rate  # STREAMINFO's 36-bit sample count starts at bit 4 of byte 21
    data[21] = (data[21] & 0xF0) | ((total >> 32) & 0x0F)
    data[22:26] = (total & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(data)


def _encoded(samples: np.ndarray, fmt: str, subtype: str | None = None, rate: int = 16_000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def test_corrupt_audio_corpus_completes_with_each_bad_file_listed(engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "audio"
    root.mkdir()
    tone = synth_audio(random.Random(0), 3.0)
    (root / "truncated.ogg").write_bytes(_encoded(tone, "OGG", "VORBIS")[:300])
    (root / "empty.wav").write_bytes(b"")
    (root / "words.mp3").write_text("not audio at all, just text with an mp3 name\n")
    (root / "no-samples.wav").write_bytes(_encoded(np.zeros(0, dtype=np.float32), "WAV"))
    (root / "six-hours.flac").write_bytes(_flac_claiming(6 * 3600))
    (root / "fine.ogg").write_bytes(_encoded(tone, "OGG", "VORBIS"))
    (root / "fine-stereo.flac").write_bytes(_encoded(np.stack([tone, tone], axis=1), "FLAC"))

    report = engine.index([root])

    reasons = {Path(path).name: reason for path, reason in report.failures}
    assert set(reasons) == {"truncated.ogg", "empty.wav", "words.mp3", "no-samples.wav", "six-hours.flac"}
    assert "empty" in reasons["empty.wav"]
    assert "named as a .mp3 file" in reasons["words.mp3"]
    assert "no samples" in reasons["no-samples.wav"]
    assert "XMODAL_MAX_AUDIO_SECONDS" in reasons["six-hours.flac"]
    assert report.indexed == 2
    hits = engine.search(audio=root / "fine.ogg", k=2, space="clap")
    assert {Path(h.path).name for h in hits} == {"fine.ogg", "fine-stereo.flac"}
    assert all(h.duration == pytest.approx(3.0, abs=0.01) for h in hits)


def test_long_audio_is_windowed_and_the_window_is_reported(engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "audio"
    root.mkdir()
    rng = random.Random(3)
    quiet, marker = np.zeros(16_000 * 12, dtype=np.float32), synth_audio(rng, 6.0)
    sf.write(root / "long.wav", np.concatenate([quiet, marker, quiet]), 16_000)
    sf.write(root / "marker.wav", marker, 16_000)
    engine.index([root])
    assert engine.spaces["clap"].size > 5  # 30 s in 10 s windows every 5 s, plus the marker
    hit = next(h for h in engine.search(audio=root / "marker.wav", k=2, space="clap") if h.path.endswith("long.wav"))
    assert hit.time_span is not None
    start, end = hit.time_span
    assert end - start <= 10.0 and start <= 12.0 <= end  # the window that holds the marker's start


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (Debian package espeak-ng)")
def test_speech_is_transcribed_and_found_by_text_with_its_time(engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "audio"
    root.mkdir()
    speech = root / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(speech), "A black cat sits on the garden fence."], check=True)
    sf.write(root / "tone.wav", synth_audio(random.Random(1), 3.0), 16_000)
    sf.write(root / "noise.wav", np.random.default_rng(0).normal(scale=0.1, size=48_000).astype(np.float32), 16_000)
    engine.index([root])

    top = engine.search("a cat on a fence", k=1, space="text")[0]
    assert Path(top.path).name == "speech.wav"
    assert top.transcript is not None and "cat" in top.transcript.lower()
    assert top.time_span is not None and top.time_span[0] < top.time_span[1] <= 4.0
    fused = engine.search("a cat on a fence", k=3)  # text, lexical and the random test models together
    speech = next(r for r in fused if Path(r.path).name == "speech.wav")
    assert speech.time_span is not None  # located even when the lexical space contributes most
    by_name = {Path(r.path).name: r for r in engine.search("anything", k=10, space="clap", modalities=["audio"])}
    assert by_name["tone.wav"].transcript is None and by_name["noise.wav"].transcript is None


@pytest.mark.skipif(
    not FREEDESKTOP.is_dir() or not TUXPAINT.is_dir(),
    reason="needs Debian's sound-theme-freedesktop and tuxpaint-stamps-default (.ci/run installs them)",
)
def test_real_non_speech_sounds_get_no_transcript(engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "effects"
    root.mkdir()
    sounds = [p for p in FREEDESKTOP.glob("*.oga") if not p.name.startswith("audio-channel")]  # those speak
    effects = [d.with_name(d.name.replace("_desc.ogg", ".ogg")) for d in TUXPAINT.rglob("*_desc.ogg")]
    sounds += [p for p in effects if p.is_file()]
    for number, sound in enumerate(sorted(sounds)):
        os.symlink(sound, root / f"{number:03d}_{sound.name}")
    report = engine.index([root])
    assert report.failed == 0 and report.indexed == len(sounds) >= 60
    results = engine.search("anything", k=len(sounds), space="clap", modalities=["audio"])
    assert len(results) == len(sounds)
    assert [r.path for r in results if r.transcript] == []


@pytest.mark.skipif(not TUXPAINT.is_dir(), reason="needs Debian's tuxpaint-stamps-default (.ci/run installs it)")
def test_a_whisper_hallucination_on_a_non_english_clip_is_not_stored(engine: Engine, tmp_path: Path) -> None:
    # English-only Whisper hears a Romanian reading as "Thank you for watching, see you in the next video, ..."
    root = tmp_path / "readings"
    root.mkdir()
    for name in ("symbols/chess/w_4_knight_desc_ro.ogg", "symbols/chess/w_4_knight_desc_ru.ogg"):
        os.symlink(TUXPAINT / name, root / Path(name).name)
    os.symlink(TUXPAINT / "animals/mammals/cats/tiger_desc.ogg", root / "tiger_desc.ogg")  # English: kept
    report = engine.index([root])
    assert (report.transcribed, report.transcripts_dropped) == (3, 2)  # the run says what it heard and dropped
    results = engine.search("see you in the next video", k=10, space="lexical")
    assert [r.path for r in results] == []
    by_name = {Path(r.path).name: r for r in engine.search("tiger", k=10, space="lexical")}
    assert "tiger" in (by_name["tiger_desc.ogg"].transcript or "").lower()
