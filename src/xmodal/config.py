"""One validated settings tree for the whole engine.

Every field can be set from the environment as ``XMODAL_<FIELD>`` (for example ``XMODAL_HOME`` or
``XMODAL_CLIP_ENCODER``) or passed to :class:`Settings` directly. Nothing here is read at import time:
callers build a ``Settings`` and hand it to the engine, the API factory or the CLI.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import ByteSize, Field, NonNegativeInt, PositiveInt, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CLIP_ENCODER = "open_clip:ViT-B-32/laion2b_s34b_b79k"
DEFAULT_TEXT_ENCODER = "sentence:all-MiniLM-L6-v2"
DEFAULT_CLAP_ENCODER = "clap:laion/clap-htsat-unfused"
DEFAULT_SPEECH_MODEL = "faster-whisper:tiny.en"


class FusionMethod(StrEnum):
    """``calibrated``: weighted sum of calibrated scores. ``rrf``: weighted reciprocal-rank fusion."""

    CALIBRATED = "calibrated"
    RRF = "rrf"


class DevicePreference(StrEnum):
    """Where models run: ``auto`` picks CUDA when present, else CPU."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class JpegDecode(StrEnum):
    """Where JPEGs for image encoders are decoded: ``auto`` on the GPU when encoders run on CUDA, else Pillow;
    ``device`` with torchvision wherever the encoder runs (CPU too); ``cpu`` always with Pillow."""

    AUTO = "auto"
    CPU = "cpu"
    DEVICE = "device"


class QueryPrecision(StrEnum):
    """The precision text queries are encoded at: ``auto`` is bfloat16 on a CPU that computes it natively (AMX or
    AVX-512 BF16; about 1.4-1.9x the float32 throughput, cosine to the float32 vector above 0.9999) and float32
    elsewhere; ``float32`` and ``bfloat16`` force one. Indexing always encodes at float32."""

    AUTO = "auto"
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"


VectorDtype = Literal["float16", "float32"]


def _default_home() -> Path:
    return Path.home() / ".xmodal"


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class Settings(BaseSettings):
    """All of xmodal's settings, with their defaults. See the README for the table."""

    model_config = SettingsConfigDict(env_prefix="XMODAL_", extra="ignore", validate_default=True)

    home: Path = Field(default_factory=_default_home, description="Holds the catalog, indexes and model cache.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the catalog; default: SQLite at $XMODAL_HOME/catalog.db."
    )
    model_cache: Path | None = Field(
        default=None, description="Where downloaded model weights go; default: $XMODAL_HOME/models."
    )

    clip_encoder: str = Field(default=DEFAULT_CLIP_ENCODER, description="Encoder spec of the `clip` space.")
    text_encoder: str = Field(default=DEFAULT_TEXT_ENCODER, description="Encoder spec of the `text` space.")
    clap_encoder: str = Field(default=DEFAULT_CLAP_ENCODER, description="Encoder spec of the `clap` space.")
    speech_model: str | None = Field(
        default=DEFAULT_SPEECH_MODEL, description="faster-whisper model that transcribes speech; empty: no transcripts."
    )
    transcribe_estimate_s: float = Field(
        default=0.6,
        gt=0,
        description="Seconds one audio file takes to transcribe, for the estimate an index run prints up front "
        "(0.6: 7,800 short clips took 77 min on a 2-core CPU).",
    )
    speech_beam_size: PositiveInt = Field(default=5, description="Beam width of the speech decoder (1: greedy).")
    speech_language: str | None = Field(default="en", description="Language of the speech; empty: detect it.")
    speech_no_speech_threshold: float = Field(
        default=0.5, ge=0, le=1, description="Whisper segments more likely than this to be silence are dropped."
    )
    speech_max_compression_ratio: float = Field(
        default=2.4, gt=0, description="Transcripts (or segments) that compress more than this are dropped as loops."
    )
    speech_min_avg_logprob: float = Field(
        default=-1.0, le=0, description="Segments decoded with a lower average log-probability are dropped."
    )
    audio_window_s: float = Field(default=10.0, gt=0, description="Audio is embedded in windows of this length.")
    audio_hop_s: float = Field(default=5.0, gt=0, description="Start-to-start distance of audio windows.")
    max_audio_seconds: float = Field(default=1800.0, gt=0, description="Longer audio files are recorded as failed.")
    device: DevicePreference = Field(default=DevicePreference.AUTO, description="auto, cpu or cuda.")
    jpeg_decode: JpegDecode = Field(
        default=JpegDecode.AUTO, description="auto (on the GPU under CUDA), device or cpu: where JPEGs are decoded."
    )
    query_precision: QueryPrecision = Field(
        default=QueryPrecision.AUTO,
        description="auto (bfloat16 where the CPU computes it natively), float32 or bfloat16: text query encodes.",
    )
    hub_timeout_s: float = Field(default=5.0, gt=0, description="How long to wait for the model hub before a download.")
    load_retry_s: float = Field(
        default=60.0, ge=0, description="After a model failed to load, wait this long to retry."
    )

    batch_size: PositiveInt = Field(default=32, description="Items per encoder batch (the start, on a GPU).")
    auto_batch_size: bool = Field(
        default=True, description="On a GPU, double the batch while it fits; halve it on out-of-memory errors."
    )
    max_batch_size: PositiveInt = Field(default=512, description="Largest batch the automatic sizing tries.")
    decode_workers: PositiveInt = Field(default_factory=_default_workers, description="Decoding threads.")
    decode_queue_size: PositiveInt = Field(default=128, description="Decoded items waiting for the encoder, at most.")
    ray_workers: int = Field(
        default=0, ge=0, description="Encoding actors of `xmodal index --ray` (0: one per GPU, else CPUs - 1)."
    )
    scan_lookup_batch: PositiveInt = Field(
        default=1000, description="Walked files looked up in the catalog together (statements per batch, not per file)."
    )
    checkpoint_every: PositiveInt = Field(
        default=2048, description="Items indexed between saves of the vector indexes (a crash redoes at most these)."
    )

    index_exact_below: PositiveInt = Field(
        default=50_000, description="Spaces with fewer vectors are searched exactly (flat index)."
    )
    index_ivf_above: PositiveInt = Field(
        default=2_000_000, description="Spaces with more vectors (or past the memory budget) use OPQ + IVF-PQ."
    )
    index_memory_budget: ByteSize = Field(
        default=ByteSize(8 * 2**30), description="Memory one space's index may take, e.g. 8GiB; decides HNSW vs IVF-PQ."
    )
    index_target_recall: float = Field(
        default=0.95, gt=0, le=1, description="Recall@10 the search effort (efSearch, nprobe) is tuned to reach."
    )
    index_hnsw_m: PositiveInt = Field(default=32, description="Neighbours per HNSW node.")
    index_compact_ratio: float = Field(
        default=0.1, gt=0, description="Rewrite a segment once its deleted vectors pass this share of it."
    )
    index_tune_queries: PositiveInt = Field(default=200, description="Sample queries used to tune search effort.")
    vector_dtype: VectorDtype = Field(
        default="float16", description="How segments keep raw vectors: float16 (half the disk) or float32 (exact)."
    )
    merge_factor: int = Field(default=10, ge=2, description="Segments of one size tier that merge into one.")
    merge_floor: PositiveInt = Field(default=2048, description="Segments smaller than this count as this size.")
    merge_max_sync: PositiveInt = Field(
        default=250_000, description="Merges into larger segments wait for the end of an indexer run."
    )

    max_file_bytes: PositiveInt = Field(default=256 * 2**20, description="Larger files are recorded as failed.")
    max_image_pixels: PositiveInt = Field(default=89_478_485, description="Decompression-bomb limit (pixels).")
    max_text_bytes: PositiveInt = Field(default=8 * 2**20, description="Larger text files are recorded as failed.")
    max_caption_chars: PositiveInt = Field(default=2000, description="Sidecar captions are cut to this length.")
    text_excerpt_chars: PositiveInt = Field(default=400, description="Length of the excerpt stored per text item.")
    svg_render_side: int = Field(
        default=384, ge=32, le=4096, description="SVG images are rendered this many pixels on their longest side."
    )
    svg_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Longest an SVG may take to render (in a child process, killed past it); slower ones fail.",
    )
    text_extensions: tuple[str, ...] = Field(default=(".txt", ".md"), description="Files indexed as text.")
    include_hidden: bool = Field(default=False, description="Index files and folders whose name starts with '.'.")
    prune_max_fraction: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="A prune removes at most this share of a root's items in one run (more: `--force-prune`).",
    )

    ocr: bool = Field(default=True, description="Read the words in images (needs the `ocr` extra).")
    ocr_max_pixels: PositiveInt = Field(
        default=4_000_000, description="Images are scaled down to at most this many pixels before OCR."
    )
    ocr_max_seconds: float = Field(
        default=20.0, gt=0, description="Per image: no further lines are recognised once OCR has run this long."
    )
    ocr_max_boxes: PositiveInt = Field(default=200, description="Per image: at most this many text lines are read.")
    ocr_min_confidence: float = Field(
        default=0.5, ge=0, le=1, description="Recognised lines less certain than this are dropped."
    )

    lexical: bool = Field(
        default=True, description="Keep the full-text `lexical` space (SQLite or PostgreSQL catalogs)."
    )
    fusion: FusionMethod = Field(default=FusionMethod.CALIBRATED, description="calibrated or rrf.")
    rrf_k: PositiveInt = Field(default=60, description="Rank offset of reciprocal-rank fusion.")
    lexical_top_z: float = Field(
        default=6.0,
        gt=0,
        le=100,
        allow_inf_nan=False,
        description="Calibrated score of a full-text match on every query word, about what a dense space gives its "
        "best true match (a partial match: its share of it, to the power `lexical_share_power`).",
    )
    lexical_share_power: float = Field(
        default=1.5,
        ge=1,
        le=4,
        allow_inf_nan=False,
        description="How a partial full-text match counts against a full one: its share of the query to this power "
        "(1: in proportion; more: a match on some of the query's words weaker still).",
    )
    lexical_language: str | None = Field(
        default="english", description="Language whose stopwords text queries drop in the lexical space; empty: none."
    )
    lexical_skip_weightless: bool = Field(
        default=True,
        description="Leave out of a lexical match the query terms BM25 gives no weight (SQLite: those half the "
        "full-text rows or more hold), whose postings are the longest to walk; the ranking stays.",
    )
    lexical_candidate_min_share: float = Field(
        default=0.25,
        ge=0,
        lt=1,
        description="A fused search's lexical candidates match the query's informative words: its commonest words, "
        "together worth less than this share of a full match, are left out of the candidate match (not of the "
        "scores), so the full-text search does not score every row that holds them; 0: every word.",
    )
    lexical_cache_size: NonNegativeInt = Field(
        default=50_000,
        description="Query terms whose best lexical score a server keeps until the full-text table changes; 0: off.",
    )
    lexical_phonetic_weight: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="What a lexical match by sound alone counts in typed text, against one by the word.",
    )
    lexical_transcript_phonetic_weight: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="What a lexical match by sound alone counts in an item with a speech transcript, against one by "
        'the word: the recogniser chose the spelling ("bee" heard as "B."), so a word that sounds the same is '
        "likely the word (not surely: Metaphone gives bee, be and by one code).",
    )
    fusion_candidates: PositiveInt = Field(
        default=50, description="Candidates each space and part contributes (at least twice the page)."
    )
    fusion_null_sample: PositiveInt = Field(
        default=256,
        description="Items per space (drawn once per publication) that each query is also scored on: what a "
        "random item scores for that query, the zero of its calibrated scores.",
    )
    filter_selective_below: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Filters passing fewer of a space's vectors than this share use an id selector.",
    )
    filter_cache_entries: PositiveInt = Field(
        default=64, description="Filters whose counts and allowed ids a server keeps until the next publication."
    )
    diversity: float = Field(default=0.0, ge=0, le=1, description="Maximal-marginal-relevance trade-off; 0: off.")
    collapse_duplicates: bool = Field(default=True, description="Fold near-duplicates into one result.")
    duplicate_threshold: float = Field(
        default=0.98,
        gt=0,
        le=1,
        description="Cosine at which two images or clips count as near-duplicates, in a space whose random pairs "
        "are orthogonal; where random pairs are alike (mean cosine m > 0) a pair's distance must be within "
        "(1 - threshold) of a random pair's: cosine >= 1 - (1 - threshold) * (1 - m).",
    )
    default_k: PositiveInt = Field(default=10, description="Results per query when k is not given.")
    max_k: PositiveInt = Field(default=1000, description="Largest k a query may ask for.")
    max_result_depth: PositiveInt = Field(
        default=1000, description="Deepest rank a query or its pages may reach (cursor offset + k)."
    )
    max_candidates: PositiveInt = Field(
        default=2000, description="Candidates a query gathers per space and reranks, at most (bounds its memory)."
    )
    max_query_pixels: PositiveInt = Field(
        default=50_000_000, description="Pixels of all the images of one query together, at most."
    )
    max_query_chars: PositiveInt = Field(default=10_000, description="Longest text query accepted.")
    max_upload_bytes: PositiveInt = Field(default=20 * 2**20, description="Largest query upload over HTTP.")
    max_request_bytes: PositiveInt = Field(
        default=32 * 2**20, description="Largest request body on any route, counted as it streams (else 413)."
    )
    api_key: SecretStr | None = Field(
        default=None, description="Key that writes and admin calls must send (X-API-Key); unset: they are refused."
    )
    read_api_key: SecretStr | None = Field(
        default=None,
        description="Key that searches and reads must send (X-API-Key; the admin key works too); unset: open.",
    )
    sources: list[Path] = Field(
        default_factory=list,
        description='Folders `/admin/index` may index, e.g. ["/media"]; empty: indexing over HTTP is off.',
    )
    image_url_allow_private: bool = Field(
        default=False,
        description="Let `image_url` reach loopback, private, link-local and multicast addresses (off: refused).",
    )
    image_url_timeout_s: float = Field(default=10.0, gt=0, description="Longest fetch of a clip-retrieval `image_url`.")
    cors_origins: list[str] = Field(
        default_factory=list, description='Origins allowed to call the API from a browser, e.g. ["*"].'
    )
    image_url_allow: list[str] = Field(
        default_factory=list,
        description="Hosts the server may fetch a clip-retrieval `image_url` from; empty: fetching is off.",
    )
    query_batch_wait_ms: float = Field(
        default=2.0,
        ge=0,
        description="Under load, how long the encoder thread waits for more text queries to batch (an idle server "
        "encodes at once); 0: no encoder thread, each query encodes on its own.",
    )
    query_batch_max: PositiveInt = Field(default=32, description="Largest batch of query encodes.")
    query_cache_size: NonNegativeInt = Field(
        default=4096, description="Text query vectors kept per server process (LRU by space, model, text); 0: off."
    )
    vector_hit_cache_size: NonNegativeInt = Field(
        default=100_000,
        description="Vector ids whose item (and text span) a process keeps in memory after a search read them from "
        "the catalog, until the catalog is next written (about 150 bytes each); 0: off.",
    )
    torch_threads: PositiveInt | None = Field(
        default=None,
        description="torch intra-op threads of a serving process; unset: the machine's CPUs shared among the "
        "`serve --workers`.",
    )
    server_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="How long `xmodal search` waits for the running `xmodal serve` of its home before searching "
        "itself.",
    )
    blas_threads: PositiveInt = Field(
        default=1,
        description="BLAS (numpy) threads of a serving process: its matrix products are small and many queries run "
        "beside each other, so more threads only spin and wait for each other.",
    )
    search_concurrency: PositiveInt = Field(
        default=4, description="Searches the server runs at once; more wait their turn (their encodes still batch)."
    )
    thumbnail_size: PositiveInt = Field(default=256, description="Longest side of served thumbnails (pixels).")
    max_thumbnail_size: PositiveInt = Field(default=1024, description="Largest thumbnail a client may ask for.")
    presigned_urls: bool = Field(
        default=False,
        description="Serve a bucket item's content as a redirect to a short-lived presigned URL (where the store "
        "can sign) instead of streaming it through the server.",
    )
    presigned_url_seconds: PositiveInt = Field(default=300, description="How long a presigned URL stays valid.")

    @field_validator("home", "model_cache", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @field_validator("sources", mode="after")
    @classmethod
    def _resolve_sources(cls, value: list[Path]) -> list[Path]:
        return [path.expanduser().resolve() for path in value]

    @field_validator("text_extensions", mode="after")
    @classmethod
    def _normalise_extensions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in value)

    @field_validator("speech_model", "speech_language", "lexical_language", mode="after")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _windows_overlap_or_touch(self) -> Settings:
        if self.audio_hop_s > self.audio_window_s:
            raise ValueError("audio_hop_s must not exceed audio_window_s, or parts of the audio would not be embedded")
        return self

    @property
    def catalog_url(self) -> str:
        """The catalog's SQLAlchemy URL (the embedded SQLite file unless one is set)."""
        return self.database_url or f"sqlite:///{self.home / 'catalog.db'}"

    @property
    def spaces_dir(self) -> Path:
        return self.home / "spaces"

    @property
    def models_dir(self) -> Path:
        return self.model_cache or self.home / "models"

    def space_encoders(self) -> dict[str, str]:
        """Space name -> encoder spec, for every space this engine keeps."""
        return {"clip": self.clip_encoder, "text": self.text_encoder, "clap": self.clap_encoder}
