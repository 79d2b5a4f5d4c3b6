"""The one interface every encoder implements.

An encoder maps media to L2-normalised float32 vectors of one dimension. It loads its model lazily, once, under
a lock, so constructing one is free and several threads may share it.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from xmodal.config import DevicePreference, JpegDecode, QueryPrecision, Settings
from xmodal.errors import WeightsUnavailableError
from xmodal.modality import Modality

if TYPE_CHECKING:  # torch is imported where a model is used, so a light command does not pay for it
    import torch


log = logging.getLogger(__name__)
_WORD = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class TextChunk:
    """A piece of a text that fits the encoder's context; ``start``/``end`` are character offsets."""

    start: int
    end: int
    text: str


def chunk_text(text: str, *, count_tokens: Callable[[str], int], max_tokens: int) -> list[TextChunk]:
    """Split ``text`` at whitespace into pieces of at most ``max_tokens`` tokens each.

    Words are packed greedily; a single word longer than the context is cut by characters. Nothing is dropped:
    the chunks cover every word of the text. ``count_tokens`` is asked once per distinct word (see
    :func:`chunk_by_offsets` for one tokenizer call in all).

    >>> [c.text for c in chunk_text("a b c d e", count_tokens=lambda s: len(s.split()), max_tokens=2)]
    ['a b', 'c d', 'e']
    """
    spans = _word_spans(text)
    costs: dict[str, int] = {}
    words = [text[start:end] for start, end in spans]
    for word in words:
        if word not in costs:
            costs[word] = count_tokens(word)

    def cut(start: int, end: int) -> list[TextChunk]:
        return _cut_long_word(text, start, end, count_tokens, max_tokens)

    return _pack(text, spans, [costs[word] for word in words], max_tokens, cut)


def chunk_by_offsets(text: str, token_starts: Sequence[int] | np.ndarray, *, max_tokens: int) -> list[TextChunk]:
    """:func:`chunk_text` from one tokenization of the whole text: ``token_starts`` are the character offsets at
    which its tokens start (a fast tokenizer's offset mapping). A word costs the tokens that start inside it;
    a word longer than the context is cut at token boundaries.

    >>> [c.text for c in chunk_by_offsets("ab cd ef", [0, 1, 3, 6], max_tokens=2)]
    ['ab', 'cd ef']
    """
    spans = _word_spans(text)
    if not spans:
        return []
    starts = np.sort(np.asarray(token_starts, dtype=np.int64))
    bounds = np.asarray(spans, dtype=np.int64)
    first = np.searchsorted(starts, bounds[:, 0], side="left")
    costs = (np.searchsorted(starts, bounds[:, 1], side="left") - first).tolist()

    def cut(start: int, end: int) -> list[TextChunk]:
        inside = starts[(starts > start) & (starts < end)].tolist()
        cuts = [start, *inside[max_tokens - 1 :: max_tokens], end]
        return [TextChunk(a, b, text[a:b]) for a, b in itertools.pairwise(cuts) if b > a]

    return _pack(text, spans, costs, max_tokens, cut)


def fast_token_starts(tokenizer: Any, text: str) -> list[int] | None:
    """Token start offsets of ``text`` from one call of a Hugging Face fast tokenizer (``None`` for a slow one)."""
    if not getattr(tokenizer, "is_fast", False):
        return None
    encoded = tokenizer(
        text, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False, verbose=False
    )
    return [start for start, _ in encoded["offset_mapping"]]


def _pack(
    text: str,
    spans: list[tuple[int, int]],
    costs: list[int],
    max_tokens: int,
    cut: Callable[[int, int], list[TextChunk]],
) -> list[TextChunk]:
    """Greedy packing of words (``spans``, each costing ``costs`` tokens) into chunks of at most ``max_tokens``."""
    chunks: list[TextChunk] = []
    start = end = -1
    used = 0
    for (word_start, word_end), cost in zip(spans, costs, strict=True):
        if cost > max_tokens:
            if start >= 0:
                chunks.append(TextChunk(start, end, text[start:end]))
                start, used = -1, 0
            chunks.extend(cut(word_start, word_end))
            continue
        if start >= 0 and used + cost <= max_tokens:
            end, used = word_end, used + cost
            continue
        if start >= 0:
            chunks.append(TextChunk(start, end, text[start:end]))
        start, end, used = word_start, word_end, cost
    if start >= 0:
        chunks.append(TextChunk(start, end, text[start:end]))
    return chunks


def _word_spans(text: str) -> list[tuple[int, int]]:
    return [match.span() for match in _WORD.finditer(text)]


def _cut_long_word(
    text: str, start: int, end: int, count_tokens: Callable[[str], int], max_tokens: int
) -> list[TextChunk]:
    pieces: list[TextChunk] = []
    while start < end:
        stop = end
        while stop - start > 1 and count_tokens(text[start:stop]) > max_tokens:
            stop = start + (stop - start) // 2
        pieces.append(TextChunk(start, stop, text[start:stop]))
        start = stop
    return pieces


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as contiguous float32 (zero rows stay zero)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def fingerprint_module(description: str, module: torch.nn.Module) -> str:
    """A short hash of a model's config and the exact bytes of its weights.

    Bytes, not arithmetic on them: a float sum depends on the order and width of the additions (AVX2, AVX-512,
    CUDA), so an indexer and a server could disagree about the same weights. Every parameter and buffer
    contributes its name, dtype, shape and raw bytes, wherever the module lives.
    """
    import torch

    digest = hashlib.sha256(b"xmodal-fingerprint-2\0" + description.encode())
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            data = tensor.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"\0{name}\0{data.dtype}\0{tuple(tensor.shape)}\0".encode())
            digest.update(data.view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def legacy_fingerprint_module(description: str, module: torch.nn.Module) -> str:
    """The fingerprint xmodal stored before it hashed bytes (a float sum and the first values of each tensor).

    Only for recognising the spaces built then: see :meth:`Encoder.accepts_fingerprint`.
    """
    import torch  # here, not at the top: a search that loads no model should not pay torch's import

    digest = hashlib.sha256(description.encode())
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().float().flatten().cpu()
            digest.update(name.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(np.float64(flat.double().sum().item()).tobytes())
            digest.update(flat[:16].numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class EncoderOptions:
    """What every encoder needs besides its spec: where weights go, where to run, how to treat the hub."""

    cache_dir: Path
    device: DevicePreference = DevicePreference.AUTO
    hub_timeout_s: float = 5.0
    retry_after_s: float = 60.0
    jpeg_decode: JpegDecode = JpegDecode.AUTO
    query_precision: QueryPrecision = QueryPrecision.AUTO

    @classmethod
    def from_settings(cls, settings: Settings) -> EncoderOptions:
        return cls(
            settings.models_dir,
            settings.device,
            settings.hub_timeout_s,
            settings.load_retry_s,
            settings.jpeg_decode,
            settings.query_precision,
        )


class Encoder(ABC):
    """Embeds images and/or texts into one vector space.

    Subclasses implement :meth:`_load` (build the model, return its fingerprint) and the ``_encode_*`` hooks;
    this class provides the lazy, thread-safe loading and the text chunking.
    """

    modalities: frozenset[Modality]

    def __init__(self, spec: str, options: EncoderOptions) -> None:
        self.spec = spec
        self.options = options
        self.cache_dir = options.cache_dir
        self._lock = threading.Lock()
        self._fingerprint: str | None = None
        self._fingerprinted: tuple[str, torch.nn.Module] | None = None
        self._legacy_fingerprint: str | None = None
        self._retry_after_s = options.retry_after_s
        self._failure: tuple[float, WeightsUnavailableError] | None = None
        self._query_lock = threading.Lock()
        self._query_copy: tuple[Any] | None = None  # (the model copy text queries run on, or None: the model)

    # lifecycle -------------------------------------------------------------------------------------------

    def load(self) -> None:
        """Load the model now (otherwise the first encode does). Raises ``WeightsUnavailableError``.

        After a failure the same error is raised again without a new attempt for ``retry_after_s`` seconds,
        so a server without weights answers every query at once instead of probing the network each time.
        """
        if self._fingerprint is not None:
            return
        with self._lock:
            if self._fingerprint is not None:
                return
            if self._failure is not None and time.monotonic() - self._failure[0] < self._retry_after_s:
                raise self._failure[1]
            try:
                self._fingerprint = self._load()
            except WeightsUnavailableError as exc:
                self._failure = (time.monotonic(), exc)
                raise
            self._failure = None

    @property
    def loaded(self) -> bool:
        return self._fingerprint is not None

    def weights_reachable(self) -> bool:
        """Whether :meth:`load` could get the weights (local, cached or downloadable), without loading them."""
        return True

    @property
    def fingerprint(self) -> str:
        """Identifies the exact model (config and weights) behind the vectors."""
        self.load()
        assert self._fingerprint is not None
        return self._fingerprint

    def accepts_fingerprint(self, stored: str) -> bool:
        """Whether vectors stored under ``stored`` came from this model: its fingerprint, or the one xmodal
        computed for the same weights before fingerprints hashed bytes (spaces built then stay usable)."""
        if stored == self.fingerprint:
            return True
        if self._fingerprinted is None:
            return False
        if self._legacy_fingerprint is None:
            self._legacy_fingerprint = legacy_fingerprint_module(*self._fingerprinted)
        return stored == self._legacy_fingerprint

    def _fingerprint_model(self, description: str, module: torch.nn.Module) -> str:
        """The fingerprint for :meth:`_load` to return; remembers the module for :meth:`accepts_fingerprint`."""
        self._fingerprinted = (description, module)
        return fingerprint_module(description, module)

    @property
    @abstractmethod
    def dim(self) -> int:
        """Vector dimension (loads the model if needed)."""

    @property
    @abstractmethod
    def max_text_tokens(self) -> int:
        """How many tokens of text one vector can see."""

    @abstractmethod
    def _load(self) -> str:
        """Build the model; return its fingerprint."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in this encoder's context, special tokens excluded."""

    # encoding --------------------------------------------------------------------------------------------

    def chunk(self, text: str) -> list[TextChunk]:
        """The pieces of ``text`` that each fit this encoder's context (one tokenizer call when the tokenizer
        reports offsets, else one per distinct word)."""
        self.load()
        starts = self.token_starts(text)
        if starts is not None:
            return chunk_by_offsets(text, starts, max_tokens=self.max_text_tokens)
        return chunk_text(text, count_tokens=self.count_tokens, max_tokens=self.max_text_tokens)

    def token_starts(self, text: str) -> list[int] | None:
        """Where each token of ``text`` starts (character offsets, special tokens excluded), from one call of a
        tokenizer that reports offsets; ``None`` when this encoder's tokenizer cannot."""
        return None

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """One unit vector per text. Texts must fit the context: use :meth:`chunk` first for long ones."""
        self.load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(self._encode_texts(list(texts)))

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """One unit vector per query text: :meth:`encode_texts` (which indexing uses) at the query precision
        (``query_precision``), so within a cosine of about 1e-4 of it."""
        self.load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(self._encode_queries(list(texts)))

    def _encode_queries(self, texts: list[str]) -> np.ndarray:
        """Encoders with a lower-precision query path override this; the others encode queries as texts."""
        return self._encode_texts(texts)

    def _query_model(self, build: Callable[[torch.dtype], Any], device: torch.device) -> Any | None:
        """The copy of the model that text queries run on, made once by ``build(dtype)`` when the query
        precision is below float32; ``None`` when queries use the model itself."""
        if self._query_copy is None:
            with self._query_lock:
                if self._query_copy is None:
                    import torch

                    from xmodal.encoders.device import query_dtype

                    dtype = query_dtype(self.options.query_precision, device)
                    copy = None
                    if dtype != torch.float32:
                        try:
                            copy = build(dtype)
                        except Exception:  # a model that cannot be copied or cast still answers, at float32
                            log.warning(
                                "%s: no %s copy for queries; they run at float32", self.spec, dtype, exc_info=True
                            )
                    self._query_copy = (copy,)
        return self._query_copy[0]

    def prepare_image(self, image: Image.Image) -> Any:
        """Pre-process one RGB image for the model (thread-safe; decoding workers call it)."""
        raise NotImplementedError(f"{type(self).__name__} does not embed images")

    def prepare_jpeg(self, data: bytes) -> Any | None:
        """An encoder input made straight from a JPEG file's bytes (decoded later, on the encoder's device), or
        ``None`` when this encoder wants a decoded image from :meth:`prepare_image`."""
        return None

    def encode_prepared_images(self, prepared: Sequence[Any]) -> np.ndarray:
        """One unit vector per output of :meth:`prepare_image`."""
        self.load()
        if not prepared:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(self._encode_prepared_images(list(prepared)))

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """One unit vector per RGB image."""
        self.load()
        return self.encode_prepared_images([self.prepare_image(image) for image in images])

    def prepare_audio(self, samples: np.ndarray, sample_rate: int) -> list[tuple[int, int, Any]]:
        """Cut mono float32 audio into windows and pre-process each: ``(start_ms, end_ms, encoder input)``."""
        raise NotImplementedError(f"{type(self).__name__} does not embed audio")

    def encode_prepared_audio(self, prepared: Sequence[Any]) -> np.ndarray:
        """One unit vector per prepared audio window."""
        self.load()
        if not prepared:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(self._encode_prepared_audio(list(prepared)))

    def _encode_prepared_audio(self, prepared: list[Any]) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not embed audio")

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not embed texts")

    def _encode_prepared_images(self, prepared: list[Any]) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not embed images")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"
