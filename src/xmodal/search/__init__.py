"""Search: the query model, per-space retrieval and the merge of their rankings."""

from xmodal.search.query import SearchQuery, SearchResult

__all__ = ["SearchQuery", "SearchResult"]
