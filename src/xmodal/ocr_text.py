"""Making recognised text searchable: PP-OCR drops the spaces between words on signs ("turnleftforthe") and
confuses letters ("weicome"). Each recognised word is split into dictionary words (``wordninja``, English
Wikipedia unigram frequencies) and, when it is no word, corrected to the most frequent word one edit away.

Used by the lexical index (the extra words are indexed with the text), by the ``text`` space (the cleaned text
is embedded) and by search (to find which line a query's words are on). Without ``wordninja`` the text is used
as it was read.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_MIN_CORRECT = 4  # shorter tokens have too many neighbours one edit away to correct safely


@functools.cache
def _model() -> Any | None:
    try:
        import wordninja
    except ImportError:
        return None
    return wordninja.DEFAULT_LANGUAGE_MODEL


def _known(word: str) -> bool:
    model = _model()
    return model is not None and word in model._wordcost


def _cost(word: str) -> float:
    model = _model()
    return model._wordcost.get(word, 1e9) if model is not None else 1e9


def _edits(word: str) -> set[str]:
    """Every string one deletion, swap, replacement or insertion away from ``word``."""
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    deletes = [a + b[1:] for a, b in splits if b]
    swaps = [a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1]
    replaces = [a + c + b[1:] for a, b in splits if b for c in _LETTERS]
    inserts = [a + c + b for a, b in splits for c in _LETTERS]
    return set(deletes + swaps + replaces + inserts)


@functools.lru_cache(maxsize=65536)
def _words_of(token: str) -> tuple[str, ...]:
    """The dictionary words a recognised token stands for ("noparking" -> no, parking; "weicome" -> welcome)."""
    token = token.lower()
    if _model() is None or token.isdigit() or _known(token):
        return (token,)
    if len(token) >= _MIN_CORRECT:
        near = [word for word in _edits(token) if _known(word)]
        if near:
            return (min(near, key=lambda word: (_cost(word), word)),)
    import wordninja

    parts = tuple(wordninja.split(token))
    if len(parts) > 1 and all(len(part) > 1 or part in {"a", "i"} for part in parts):
        return tuple(part.lower() for part in parts)
    return (token,)


def words(text: str) -> list[str]:
    """The words ``text`` stands for, lower-case, split and corrected."""
    return [word for token in _TOKEN.findall(text) for word in _words_of(token)]


def clean(text: str) -> str:
    """``text`` as words separated by spaces, for an encoder ("NOPARKING ON TUESDAYS" -> "no parking on tuesdays")."""
    return " ".join(words(text))


def searchable(text: str) -> str:
    """``text`` followed by the words it stands for that it does not already hold, for the full-text index."""
    present = {token.lower() for token in _TOKEN.findall(text)}
    extra = [word for word in dict.fromkeys(words(text)) if word not in present]
    return f"{text}\n{' '.join(extra)}" if extra else text


def best_lines(lines: Sequence[dict[str, Any]], query: str, within: tuple[int, int] | None = None) -> list[int]:
    """Positions of the OCR lines (dicts with ``text``, ``start``, ``end``) that hold the most of ``query``'s words,
    only among those inside the span ``within`` when given; none when no line holds any."""
    wanted = set(words(query)) | {token.lower() for token in _TOKEN.findall(query)}
    scored: list[tuple[int, int]] = []
    for position, line in enumerate(lines):
        if within is not None and (line["end"] <= within[0] or line["start"] >= within[1]):
            continue
        found = len(wanted & _line_words(line["text"]))
        if found:
            scored.append((found, position))
    if not scored:
        return []
    top = max(found for found, _ in scored)
    return [position for found, position in scored if found == top]


def _line_words(text: str) -> set[str]:
    return set(words(text)) | {token.lower() for token in _TOKEN.findall(text)}


def span_of(lines: Iterable[dict[str, Any]]) -> tuple[int, int] | None:
    """The character span covering ``lines``."""
    chosen = list(lines)
    if not chosen:
        return None
    return min(line["start"] for line in chosen), max(line["end"] for line in chosen)
