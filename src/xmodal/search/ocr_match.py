"""Where a result matched the words read from its image: which OCR lines (span and boxes), and which of the
result's sources found it there (its explanation names the origin ``ocr``).

A dense source found it there when its best vector of the item is a chunk of the OCR text; the lexical source
when the query's words (split and corrected as at indexing) are on one of the lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from xmodal import ocr_text
from xmodal.search.fusion import Source
from xmodal.search.query import OcrMatch
from xmodal.store.catalog import Catalog, ResultItem

OCR = "ocr"
LEXICAL = "lexical"


def ocr_origins(
    catalog: Catalog,
    item: ResultItem,
    sources: Sequence[Source],
    best: Mapping[Source, int],
    texts: Mapping[Source, str],
) -> dict[Source, tuple[int, int] | None]:
    """The sources that matched ``item`` in its OCR text, each with the span of the OCR chunk (dense: ``best``
    names the item's best vector for each dense source, and only those) or ``None`` (lexical: the words decide
    the lines)."""
    if not item.ocr_lines:
        return {}
    found: dict[Source, tuple[int, int] | None] = {}
    for source in sources:
        if source.space == LEXICAL and source in texts and ocr_text.best_lines(item.ocr_lines, texts[source]):
            found[source] = None
    hits = catalog.resolve_vectors(list(best.values())) if best else {}
    for source, vector_id in best.items():
        hit = hits.get(vector_id)
        if hit is not None and hit.origin == OCR and hit.start is not None and hit.end is not None:
            found[source] = (hit.start, hit.end)
    return found


def ocr_match(item: ResultItem, query_text: str | None, chunk: tuple[int, int] | None) -> OcrMatch | None:
    """The OCR lines of ``item`` the query matched: those holding most of its words (inside the matched chunk when
    a dense source found it), else every line of that chunk."""
    if not item.ocr_lines or not item.ocr_text:
        return None
    lines = item.ocr_lines
    chosen = [lines[i] for i in ocr_text.best_lines(lines, query_text or "", within=chunk)]
    if not chosen and chunk is not None:
        chosen = [line for line in lines if line["start"] < chunk[1] and line["end"] > chunk[0]]
    span = ocr_text.span_of(chosen)
    if span is None:
        return None
    boxes = tuple(tuple((float(x), float(y)) for x, y in line["polygon"]) for line in chosen)
    return OcrMatch(span=span, text=item.ocr_text[span[0] : span[1]], boxes=boxes)
