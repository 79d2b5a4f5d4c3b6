"""The exceptions xmodal raises, all under :class:`XmodalError`.

    XmodalError
    ├── ConfigError              a setting or encoder spec is wrong
    ├── WeightsUnavailableError  a model's weights are neither cached nor downloadable
    ├── SpaceMismatchError       a vector space was built with another model than the one configured
    ├── DecodeError              a file or upload could not be read as the media it claims to be
    ├── InvalidQueryError        a query is empty, too long or asks for something impossible
    ├── NotFoundError            an item, space or file does not exist
    ├── IndexLockedError         another indexer is running on the same home
    ├── CatalogInUseError        the catalog database belongs to another home
    └── CatalogTooNewError       the catalog database was written by a newer xmodal

Errors raised by lower libraries are translated here at the boundary and chained with ``from exc``.
"""

from __future__ import annotations


class XmodalError(Exception):
    """Base class of every error xmodal raises on purpose."""


class ConfigError(XmodalError):
    """A setting or an encoder spec is invalid."""


class WeightsUnavailableError(XmodalError):
    """A model's weights are not in the cache and could not be downloaded."""

    def __init__(self, spec: str, cache_dir: str, cause: str, *, local_options: tuple[str, ...] = ()) -> None:
        self.spec = spec
        self.cache_dir = cache_dir
        self.cause = cause
        lines = [
            f"The weights for encoder '{spec}' are not available: {cause}",
            "To fix it, do one of these:",
            f"  - on a machine with network access, run `xmodal models pull {spec}` and copy the cache folder "
            f"({cache_dir}) to the same place here (or point XMODAL_MODEL_CACHE at it);",
            *(f"  - {option};" for option in local_options),
        ]
        super().__init__("\n".join(lines).rstrip(";") + ".")


class SpaceMismatchError(XmodalError):
    """A space's vectors came from a different model than the configured encoder."""


class DecodeError(XmodalError):
    """A file or an upload could not be decoded."""


class InvalidQueryError(XmodalError):
    """A query cannot be answered as asked."""


class NotFoundError(XmodalError):
    """An item, a space or a file does not exist."""


class IndexLockedError(XmodalError):
    """Another indexer holds the home's lock."""


class CatalogInUseError(XmodalError):
    """The catalog database describes another home's vectors; each home needs its own catalog."""


class CatalogTooNewError(XmodalError):
    """The catalog's schema is newer than this xmodal knows: a newer version wrote it, and this one must not."""


class InvalidCursorError(InvalidQueryError):
    """A paging cursor was not given out by this home, or was given out for another query."""
