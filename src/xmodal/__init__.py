"""xmodal: cross-modal retrieval over folders of images and texts.

The public API is small: :class:`Engine` to index and search, the query/result types, and the errors.
Its names are imported when first used, so that ``import xmodal.cli`` (or any light submodule) does not pay for
the engine, the store and their libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xmodal.config import FusionMethod, Settings
    from xmodal.engine import Engine
    from xmodal.errors import (
        ConfigError,
        DecodeError,
        InvalidQueryError,
        NotFoundError,
        SpaceMismatchError,
        WeightsUnavailableError,
        XmodalError,
    )
    from xmodal.modality import Modality
    from xmodal.search.query import QueryPart, SearchQuery, SearchResult

_HOMES = {
    "ConfigError": "xmodal.errors",
    "DecodeError": "xmodal.errors",
    "Engine": "xmodal.engine",
    "FusionMethod": "xmodal.config",
    "InvalidQueryError": "xmodal.errors",
    "Modality": "xmodal.modality",
    "NotFoundError": "xmodal.errors",
    "QueryPart": "xmodal.search.query",
    "SearchQuery": "xmodal.search.query",
    "SearchResult": "xmodal.search.query",
    "Settings": "xmodal.config",
    "SpaceMismatchError": "xmodal.errors",
    "WeightsUnavailableError": "xmodal.errors",
    "XmodalError": "xmodal.errors",
}
__all__ = [
    "ConfigError",
    "DecodeError",
    "Engine",
    "FusionMethod",
    "InvalidQueryError",
    "Modality",
    "NotFoundError",
    "QueryPart",
    "SearchQuery",
    "SearchResult",
    "Settings",
    "SpaceMismatchError",
    "WeightsUnavailableError",
    "XmodalError",
]


def __getattr__(name: str) -> Any:
    """``xmodal.Engine`` and the other public names, from the module that defines them (PEP 562)."""
    if name not in _HOMES:
        raise AttributeError(f"module 'xmodal' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
