"""Pre-fetching model weights and listing what the cache holds."""

from __future__ import annotations

from dataclasses import dataclass

from xmodal.config import Settings
from xmodal.encoders.registry import build_encoder


@dataclass(frozen=True, slots=True)
class CachedModel:
    """One repository in the model cache."""

    repo: str
    size_bytes: int
    files: int
    path: str


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
