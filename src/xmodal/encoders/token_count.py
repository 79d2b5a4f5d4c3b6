"""Counting a text's tokens without racing the encoder over its tokenizer.

A Hugging Face fast tokenizer keeps its padding and truncation settings on the shared Rust object and changes them
on every call: ``tokenize()`` on a request thread (chunking a query) turns padding off while the encoder thread's
batch call is padding, and the batch comes back ragged ("expected sequence of length 15 at dim 1 (got 13)"). So
counting (and finding where tokens start, for chunking) uses its own copy of the tokenizer, one call at a time.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from xmodal.encoders.base import fast_token_starts


class TokenCounter:
    """Thread-safe token counts from a private copy of ``tokenizer`` (special tokens excluded)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = copy.deepcopy(tokenizer)
        self._lock = threading.Lock()

    def __call__(self, text: str) -> int:
        with self._lock:
            return len(self._tokenizer.tokenize(text))

    def token_starts(self, text: str) -> list[int] | None:
        """Where each token of ``text`` starts (see :func:`xmodal.encoders.base.fast_token_starts`)."""
        with self._lock:
            return fast_token_starts(self._tokenizer, text)
