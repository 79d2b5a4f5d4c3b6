"""The home the scale benchmark measures: a fast deterministic encoder over clustered vectors, a real folder of
small files, and a home built from them through the engine's own write path.

Vectors are drawn around ``CLUSTERS`` random centroids (cosine to the centroid about 0.7), so HNSW and IVF behave
as on real embeddings, not as on uniform noise. Item ``i``'s vectors depend only on (seed, i): any process
(the builder, the server, the measuring one) derives the same ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmodal.config import Settings
from xmodal.encoders.base import Encoder, EncoderOptions, l2_normalise
from xmodal.engine import Engine
from xmodal.errors import WeightsUnavailableError
from xmodal.modality import Modality
from xmodal.store.catalog import ItemRecord, NewEmbedding, WriteRequest

CLUSTERS = 1024
NOISE = 1.0  # the noise vector's expected length, against a unit centroid
GROUPS = 1000  # metadata "group" g0..g999: a filter on one group passes 0.1% of the items
WRITE_BATCH = 512  # items per catalog transaction (the indexer's encoder batch)
_SYLLABLES = ["ka", "lo", "mi", "ten", "ra", "su", "vel", "dor", "pi", "an", "ex", "ul", "bre", "sho", "tam", "qui"]
WORDS = tuple(a + b + c for a in _SYLLABLES for b in _SYLLABLES for c in ("", *_SYLLABLES[:7]))  # 2,048 words
HELD_OUT = "heldout "  # a text query "heldout 17" is held-out query vector 17 (for recall, through HTTP too)


def zipf_words(rng: np.random.Generator, count: int) -> np.ndarray:
    """Word ranks as natural text has them (Zipf's law): a few words are common, most are rare."""
    return (rng.zipf(1.3, size=count) - 1) % len(WORDS)


def centroids(seed: int, dim: int) -> np.ndarray:
    return l2_normalise(np.random.default_rng((seed, 0xC0FFEE)).standard_normal((CLUSTERS, dim)))


def cluster_of(ids: np.ndarray) -> np.ndarray:
    return (ids.astype(np.uint64) * np.uint64(2654435761) % np.uint64(CLUSTERS)).astype(np.int64)


def item_vectors(seed: int, dim: int, start: int, count: int, *, means: np.ndarray) -> np.ndarray:
    """Vectors of items ``start .. start+count`` (blocks of ``WRITE_BATCH`` from their own generator)."""
    out = np.empty((count, dim), dtype=np.float32)
    for block in range(start // WRITE_BATCH, (start + count - 1) // WRITE_BATCH + 1):
        low, high = block * WRITE_BATCH, (block + 1) * WRITE_BATCH
        noise = np.random.default_rng((seed, block)).standard_normal((WRITE_BATCH, dim), dtype=np.float32)
        ids = np.arange(low, high)
        vectors = means[cluster_of(ids)] + noise * (NOISE / np.sqrt(dim))
        take = slice(max(start, low) - low, min(start + count, high) - low)
        out[max(start, low) - start : min(start + count, high) - start] = vectors[take]
    return l2_normalise(out)


def held_out_queries(seed: int, dim: int, count: int) -> np.ndarray:
    """Queries from the items' distribution that are not items (their own generator)."""
    rng = np.random.default_rng((seed, 0xBEEF))
    means = centroids(seed, dim)
    picks = rng.integers(0, CLUSTERS, size=count)
    return l2_normalise(means[picks] + rng.standard_normal((count, dim), dtype=np.float32) * (NOISE / np.sqrt(dim)))


class ClusteredEncoder(Encoder):
    """A fast deterministic stand-in for a model: texts map to clustered vectors by a hash of their words;
    ``"heldout N"`` maps to held-out query N. Nothing to load, so a process starts as fast as the store lets it."""

    def __init__(
        self, spec: str, *, dim: int, seed: int, modalities: frozenset[Modality], reachable: bool = True
    ) -> None:
        super().__init__(spec, EncoderOptions(cache_dir=Path("/nonexistent")))
        self._dim, self.seed, self.modalities, self.reachable = dim, seed, modalities, reachable
        self._means = centroids(seed, dim)
        self._held_out: np.ndarray | None = None

    def weights_reachable(self) -> bool:
        return self.reachable

    def _load(self) -> str:
        if not self.reachable:
            raise WeightsUnavailableError(self.spec, "(none)", "the scale benchmark keeps no audio space")
        return f"clustered-{self._dim}-{self.seed}"

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_text_tokens(self) -> int:
        return 75

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            if text.startswith(HELD_OUT):
                if self._held_out is None:
                    self._held_out = held_out_queries(self.seed, self._dim, 1000)
                rows.append(self._held_out[int(text[len(HELD_OUT) :]) % 1000])
                continue
            word_hash = sum((i + 1) * sum(map(ord, w)) for i, w in enumerate(text.split()))
            rng = np.random.default_rng((self.seed, word_hash))
            rows.append(
                self._means[word_hash % CLUSTERS] + rng.standard_normal(self._dim) * (NOISE / np.sqrt(self._dim))
            )
        return np.asarray(rows, dtype=np.float32)

    def prepare_image(self, image: object) -> object:
        return image

    def _encode_prepared_images(self, prepared: list[object]) -> np.ndarray:
        return np.ones((len(prepared), self._dim), dtype=np.float32)

    def prepare_audio(self, samples: np.ndarray, sample_rate: int) -> list[tuple[int, int, object]]:
        return [(0, 1000, samples)]

    def _encode_prepared_audio(self, prepared: list[object]) -> np.ndarray:
        return np.ones((len(prepared), self._dim), dtype=np.float32)


@dataclass(frozen=True)
class ScaleConfig:
    """What a scale home is made of: the folder of files, the home, the vector dimension and the seed."""

    root: Path
    home: Path
    dim: int = 512
    seed: int = 0

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "home": self.home,
            "clip_encoder": "bench:clip",
            "text_encoder": "bench:text",
            "clap_encoder": "bench:clap",
            "speech_model": None,
            "ocr": False,
            "collapse_duplicates": False,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    def build_encoder(self, spec: str, settings: Settings) -> Encoder:
        """The engine's encoder builder for this home (every process of the benchmark passes it)."""
        space = spec.partition(":")[2]
        modalities = {
            "clip": frozenset({Modality.IMAGE, Modality.TEXT}),
            "text": frozenset({Modality.TEXT}),
            "clap": frozenset({Modality.AUDIO, Modality.TEXT}),
        }[space]
        seed = {"clip": self.seed, "text": self.seed + 1, "clap": self.seed + 2}[space]
        return ClusteredEncoder(spec, dim=self.dim, seed=seed, modalities=modalities, reachable=space != "clap")

    def open(self, **overrides: object) -> Engine:
        return Engine.open(settings=self.settings(**overrides), build_encoder=self.build_encoder)


def write_files(root: Path, count: int, *, files_from: int = 0) -> Iterator[tuple[str, int, int]]:
    """Write small files ``files_from .. count`` (1,000 a folder); yields (path, size, mtime_ns) of each."""
    for number in range(files_from, count):
        folder = root / f"{number // 1000:05d}"
        if number % 1000 == 0 or number == files_from:
            folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{number:08d}.jpg"
        with open(path, "wb") as handle:
            handle.write(number.to_bytes(8, "little"))
        info = os.stat(path)
        yield str(path), info.st_size, info.st_mtime_ns


def record(path: str, root: Path, size: int, mtime_ns: int, number: int) -> ItemRecord:
    """The catalog row the indexer would make of file ``number`` with a caption and a metadata sidecar."""
    caption = " ".join(WORDS[i] for i in zipf_words(np.random.default_rng(number), 8))
    return ItemRecord(
        path=path,
        source=root.as_uri(),
        size=size,
        mtime_ns=mtime_ns,
        modality=Modality.IMAGE,
        media_type="image/jpeg",
        width=16,
        height=16,
        caption=caption,
        user_metadata={"group": f"g{number % GROUPS}", "batch": str(number // WRITE_BATCH)},
    )


def write_items(engine: Engine, config: ScaleConfig, files: list[tuple[str, int, int]], start: int) -> None:
    """Items ``start .. start+len(files)`` through the catalog and the spaces' writers, as the indexer's write
    stage does (an image vector in ``clip``, a caption vector in ``text``)."""
    requests = [
        WriteRequest(
            record(path, config.root, size, mtime, start + n), {"clip": [NewEmbedding()], "text": [NewEmbedding()]}
        )
        for n, (path, size, mtime) in enumerate(files)
    ]
    new_ids, _ = engine.catalog.write_items(requests)
    for name, seed in (("clip", config.seed), ("text", config.seed + 1)):
        means = centroids(seed, config.dim)
        vectors = item_vectors(seed, config.dim, start, len(files), means=means)
        engine.spaces[name].writer().add(np.asarray(new_ids[name], dtype=np.int64), vectors)


def build(config: ScaleConfig, items: int, *, checkpoint_every: int = 2048) -> None:
    """Write ``items`` files and index them (publishing every ``checkpoint_every`` items, then a final merge)."""
    config.root.mkdir(parents=True, exist_ok=True)
    with config.open() as engine:
        for name in ("clip", "text"):
            engine.spaces[name].writer()  # registers the space in the catalog, as the indexer's first batch does
        batch: list[tuple[str, int, int]] = []
        written = since_save = 0
        for entry in write_files(config.root, items):
            batch.append(entry)
            if len(batch) == WRITE_BATCH:
                write_items(engine, config, batch, written)
                written, since_save, batch = written + len(batch), since_save + len(batch), []
                if since_save >= checkpoint_every:
                    engine.spaces.save()
                    since_save = 0
        if batch:
            write_items(engine, config, batch, written)
        engine.spaces.save(final=True)
