"""Audio queries equal a brute-force search over the same CLAP encoder's embeddings."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import brute_force_top_k, make_settings, random_text, synth_audio, top_k_overlap, write_audio_corpus
from xmodal.config import Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine
from xmodal.modality import Modality

QUERIES = 100
K = 10


@pytest.fixture(scope="module")
def audio_engine(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_clip_dir: Path,
    tiny_clap_dir: Path,
    encoder_pool: Callable[[str, Settings], Encoder],
) -> Iterator[Engine]:
    root = write_audio_corpus(tmp_path_factory.mktemp("audio"), clips=60, texts=60)
    home = tmp_path_factory.mktemp("home")
    settings = make_settings(home, tiny_clip_dir, tiny_clap_dir, speech_model="")  # no transcripts: pure CLAP
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        report = engine.index([root])
        assert report.failed == 0 and report.indexed == 120
        yield engine


def _clap_vectors(engine: Engine, modality: Modality) -> tuple[list[int], np.ndarray]:
    encoder = engine.spaces["clap"].encoder
    from sqlalchemy import select

    from xmodal.store.models import Item

    with engine.catalog.session() as session:
        items = list(session.scalars(select(Item).where(Item.modality == modality.value).order_by(Item.id)))
    owners: list[int] = []
    vectors: list[np.ndarray] = []
    for item in items:
        if modality is Modality.AUDIO:
            samples, rate = sf.read(item.path, dtype="float32")
            inputs = [features for _, _, features in encoder.prepare_audio(samples, rate)]
            embedded = encoder.encode_prepared_audio(inputs)
        else:
            embedded = encoder.encode_texts([c.text for c in encoder.chunk(Path(item.path).read_text())])
        owners.extend([item.id] * len(embedded))
        vectors.extend(embedded)
    return owners, np.stack(vectors)


@pytest.mark.parametrize(
    ("query_kind", "target"),
    [("text", Modality.AUDIO), ("audio", Modality.AUDIO), ("audio", Modality.TEXT)],
)
def test_audio_queries_matchbrute_force_top_k(
    audio_engine: Engine, tmp_path: Path, query_kind: str, target: Modality
) -> None:
    rng = random.Random(f"{query_kind}-{target}")
    encoder = audio_engine.spaces["clap"].encoder
    owners, vectors = _clap_vectors(audio_engine, target)
    expected: list[list[int]] = []
    actual: list[list[int]] = []
    for number in range(QUERIES):
        if query_kind == "text":
            text = random_text(rng, rng.randrange(1, 6))
            query = encoder.encode_texts([text])[0]
            results = audio_engine.search(text, k=K, space="clap", modalities=[target])
        else:
            path = tmp_path / f"q{number}.wav"
            sf.write(path, synth_audio(rng, rng.choice([1.0, 3.0, 14.0])), 16_000)
            samples, rate = sf.read(path, dtype="float32")
            windows = encoder.prepare_audio(samples, rate)
            mean = encoder.encode_prepared_audio([f for _, _, f in windows]).mean(axis=0)
            query = mean / np.linalg.norm(mean)
            results = audio_engine.search(audio=path, k=K, space="clap", modalities=[target])
        expected.append(brute_force_top_k(owners, vectors, query, K))
        actual.append([r.item_id for r in results])
    assert top_k_overlap(expected, actual) >= 0.99


def test_same_audio_twice_gives_the_same_vector(audio_engine: Engine, tmp_path: Path) -> None:
    encoder = audio_engine.spaces["clap"].encoder
    signal = synth_audio(random.Random(9), 25.0)  # longer than a window: no random crop may happen
    first = encoder.encode_prepared_audio([f for _, _, f in encoder.prepare_audio(signal, 16_000)])
    second = encoder.encode_prepared_audio([f for _, _, f in encoder.prepare_audio(signal, 16_000)])
    np.testing.assert_array_equal(first, second)
    assert len(first) == 4  # windows at 0, 5, 10 and 15 s
