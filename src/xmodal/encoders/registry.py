"""From an encoder spec string (``family:target``) to an encoder object."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from xmodal.config import DevicePreference, Settings
from xmodal.encoders.base import Encoder
from xmodal.errors import ConfigError


def _open_clip(spec: str, target: str, cache_dir: Path, device: DevicePreference) -> Encoder:
    from xmodal.encoders.clip import OpenClipEncoder, OpenClipSource

    return OpenClipEncoder(spec, OpenClipSource.parse(target), cache_dir=cache_dir, device=device)


def _sentence(spec: str, target: str, cache_dir: Path, device: DevicePreference) -> Encoder:
    from xmodal.encoders.text import SentenceEncoder

    return SentenceEncoder(spec, target, cache_dir=cache_dir, device=device)


_FAMILIES: dict[str, Callable[[str, str, Path, DevicePreference], Encoder]] = {
    "open_clip": _open_clip,
    "sentence": _sentence,
}


def build_encoder(spec: str, settings: Settings) -> Encoder:
    """The encoder a spec names; nothing is loaded until it is first used.

    >>> build_encoder("sentence:all-MiniLM-L6-v2", Settings(home="/tmp/xmodal-doc")).spec
    'sentence:all-MiniLM-L6-v2'
    """
    family, sep, target = spec.partition(":")
    if not sep or family not in _FAMILIES:
        known = ", ".join(f"'{name}:...'" for name in _FAMILIES)
        raise ConfigError(f"Unknown encoder spec '{spec}': it must start with one of {known}.")
    return _FAMILIES[family](spec, target, settings.models_dir, settings.device)
