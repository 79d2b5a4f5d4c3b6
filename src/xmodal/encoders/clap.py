"""CLAP models (transformers' ``ClapModel``): audio and texts in one space.

Spec forms (after ``clap:``): a hub name (``laion/clap-htsat-unfused``, downloaded on first use) or a folder
(``/path`` or ``local-dir:/path``) saved with ``save_pretrained`` for both the model and its processor.

Audio is cut into windows no longer than the model's input (10 s for LAION's CLAP) before feature extraction,
so the feature extractor never crops at random: the same audio always gets the same vector.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xmodal.encoders.audio import resample, windows
from xmodal.encoders.base import Encoder, EncoderOptions
from xmodal.encoders.device import inference_context, resolve_device
from xmodal.encoders.hub import hub_offline_reason
from xmodal.encoders.token_count import TokenCounter
from xmodal.errors import ConfigError, WeightsUnavailableError
from xmodal.modality import Modality

if TYPE_CHECKING:  # torch and transformers load with the model
    import torch

LOCAL_OPTIONS = ("use a folder saved with save_pretrained: XMODAL_CLAP_ENCODER='clap:/path/to/folder'",)


def _location(target: str) -> tuple[str, bool]:
    """(what ``from_pretrained`` loads, whether it is a local folder)."""
    if not target:
        raise ConfigError("Empty clap spec: write e.g. 'clap:laion/clap-htsat-unfused'.")
    path = target.removeprefix("local-dir:")
    if path != target or target.startswith(("/", "./", "../", "~")):
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"clap encoder folder not found: {folder}")
        return str(folder), True
    return target, False


class ClapEncoder(Encoder):
    """A CLAP model; ``encode_texts`` and audio windows land in the same space."""

    modalities = frozenset({Modality.AUDIO, Modality.TEXT})

    def __init__(self, spec: str, target: str, options: EncoderOptions, *, window_s: float, hop_s: float) -> None:
        super().__init__(spec, options)
        self.location, self._local = _location(target)
        self._window_s, self._hop_s = window_s, hop_s
        self._model: Any = None
        self._features: Any = None
        self._tokenizer: Any = None
        self._counter: TokenCounter | None = None
        self._device: torch.device  # set by _load

    def _load(self) -> str:
        from transformers import ClapModel, ClapProcessor

        self._device = resolve_device(self.options.device)
        if not self._local and not self._is_cached():
            reason = hub_offline_reason(self.options.hub_timeout_s)
            if reason is not None:
                raise WeightsUnavailableError(self.spec, str(self.cache_dir), reason, local_options=LOCAL_OPTIONS)
        try:
            processor = ClapProcessor.from_pretrained(self.location, cache_dir=str(self.cache_dir))
            model = ClapModel.from_pretrained(self.location, cache_dir=str(self.cache_dir)).to(self._device).eval()
        except OSError as exc:
            if self._local:
                raise ConfigError(f"clap encoder '{self.spec}' failed to load: {exc}") from exc
            raise WeightsUnavailableError(
                self.spec, str(self.cache_dir), str(exc).splitlines()[0], local_options=LOCAL_OPTIONS
            ) from exc
        self._model, self._features, self._tokenizer = model, processor.feature_extractor, processor.tokenizer
        self._counter = TokenCounter(processor.tokenizer)  # the encoder thread's calls must not see its settings
        return self._fingerprint_model(f"clap:{model.config.projection_dim}", model)

    def weights_reachable(self) -> bool:
        if self.loaded or self._local or self._is_cached():
            return True
        return hub_offline_reason(self.options.hub_timeout_s) is None

    def _is_cached(self) -> bool:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(self.location, "config.json", cache_dir=str(self.cache_dir)), str)

    @property
    def dim(self) -> int:
        self.load()
        return int(self._model.config.projection_dim)

    @property
    def max_text_tokens(self) -> int:
        self.load()
        return int(min(self._tokenizer.model_max_length, 512)) - 2

    def count_tokens(self, text: str) -> int:
        self.load()
        assert self._counter is not None
        return self._counter(text)

    def token_starts(self, text: str) -> list[int] | None:
        self.load()
        assert self._counter is not None
        return self._counter.token_starts(text)

    @property
    def sample_rate(self) -> int:
        self.load()
        return int(self._features.sampling_rate)

    def prepare_audio(self, samples: np.ndarray, sample_rate: int) -> list[tuple[int, int, Any]]:
        self.load()
        rate = self.sample_rate
        longest = self._features.nb_max_samples / rate
        signal = resample(samples, sample_rate, rate)
        prepared = []
        for window in windows(signal, rate, window_s=min(self._window_s, longest), hop_s=min(self._hop_s, longest)):
            features = self._features(
                window.samples, sampling_rate=rate, return_tensors="np", truncation="rand_trunc", padding="repeatpad"
            )["input_features"][0]
            prepared.append((window.start_ms, window.end_ms, features))
        return prepared

    def _encode_prepared_audio(self, prepared: list[Any]) -> np.ndarray:
        import torch

        features = torch.from_numpy(np.stack(prepared)).to(self._device)
        is_longer = torch.zeros((len(prepared), 1), dtype=torch.bool, device=self._device)
        with inference_context(self._device):
            output = self._model.get_audio_features(input_features=features, is_longer=is_longer)
        return _embeddings(output)

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        tokens = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_text_tokens + 2, return_tensors="pt"
        ).to(self._device)
        with inference_context(self._device):
            output = self._model.get_text_features(**tokens)
        return _embeddings(output)


def _embeddings(output: Any) -> np.ndarray:
    """Projected embeddings from either a tensor or a model output object (transformers 5 returns the latter)."""
    import torch

    tensor = output if isinstance(output, torch.Tensor) else output.pooler_output
    return tensor.float().cpu().numpy()
