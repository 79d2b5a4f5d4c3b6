"""Pre-fetching model weights and listing what the cache holds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xmodal.config import Settings
from xmodal.encoders.registry import build_encoder


@dataclass(frozen=True, slots=True)
class CachedModel:
    """One repository in the model cache."""

    repo: str
    size_bytes: int
    files: int
    path: str


@dataclass(frozen=True, slots=True)
class ModelInUse:
    """A model the configuration uses, and whether its weights are at hand."""

    used_by: str  # a space's name, or "speech"
    spec: str
    weights: str  # "ready" or why not


def models_in_use(settings: Settings) -> list[ModelInUse]:
    """Each space's encoder and the speech model, with whether their weights are at hand (installed, local,
    cached or downloadable) — without loading them."""
    from xmodal.encoders.speech import Transcriber
    from xmodal.errors import XmodalError

    found = []
    for name, spec in settings.space_encoders().items():
        try:
            ready = build_encoder(spec, settings).weights_reachable()
        except XmodalError as exc:
            found.append(ModelInUse(name, spec, str(exc).splitlines()[0]))
            continue
        found.append(ModelInUse(name, spec, "ready" if ready else "not downloaded: run `xmodal models pull`"))
    transcriber = Transcriber.from_settings(settings)
    if transcriber is not None:
        local = Path(transcriber.location).is_dir()
        found.append(ModelInUse("speech", transcriber.spec, "ready" if local else "downloaded on first use"))
    return found


def pull(spec: str, settings: Settings) -> str:
    """Download (if needed) and load the model behind ``spec``; return its fingerprint."""
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    return build_encoder(spec, settings).fingerprint


def list_cached(settings: Settings) -> list[CachedModel]:
    """Every model repository in ``settings.models_dir``, largest first."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(settings.models_dir)
    except CacheNotFound:
        return []
    models = [
        CachedModel(repo=repo.repo_id, size_bytes=repo.size_on_disk, files=repo.nb_files, path=str(repo.repo_path))
        for repo in info.repos
    ]
    return sorted(models, key=lambda model: model.size_bytes, reverse=True)
