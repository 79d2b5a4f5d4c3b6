"""From an encoder spec string (``family:target``) to an encoder object."""

from __future__ import annotations

from collections.abc import Callable

from xmodal.config import Settings
from xmodal.encoders.base import Encoder, EncoderOptions
from xmodal.errors import ConfigError


def _open_clip(spec: str, target: str, settings: Settings) -> Encoder:
    from xmodal.encoders.clip import OpenClipEncoder

    return OpenClipEncoder(spec, target, EncoderOptions.from_settings(settings))


def _sentence(spec: str, target: str, settings: Settings) -> Encoder:
    from xmodal.encoders.text import SentenceEncoder

    return SentenceEncoder(spec, target, EncoderOptions.from_settings(settings))


def _clap(spec: str, target: str, settings: Settings) -> Encoder:
    from xmodal.encoders.clap import ClapEncoder

    options = EncoderOptions.from_settings(settings)
    return ClapEncoder(spec, target, options, window_s=settings.audio_window_s, hop_s=settings.audio_hop_s)


_FAMILIES: dict[str, Callable[[str, str, Settings], Encoder]] = {
    "open_clip": _open_clip,
    "sentence": _sentence,
    "clap": _clap,
}


def build_encoder(spec: str, settings: Settings) -> Encoder:
    """The encoder a spec names; nothing is loaded (or imported: torch, open_clip, transformers) until it is first
    used, and an open_clip architecture or tag is checked then too.

    >>> build_encoder("sentence:all-MiniLM-L6-v2", Settings(home="/tmp/xmodal-doc")).spec
    'sentence:all-MiniLM-L6-v2'
    """
    family, sep, target = spec.partition(":")
    if not sep or family not in _FAMILIES:
        known = ", ".join(f"'{name}:...'" for name in _FAMILIES)
        raise ConfigError(f"Unknown encoder spec '{spec}': it must start with one of {known}.")
    return _FAMILIES[family](spec, target, settings)
