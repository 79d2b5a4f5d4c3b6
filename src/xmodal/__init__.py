"""xmodal: cross-modal retrieval over folders of images and texts.

The public API is small: :class:`Engine` to index and search, the query/result types, and the errors.
"""

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
