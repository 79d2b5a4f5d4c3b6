"""Words read from images are found by full-text search although the reader ran them together or mis-read a
letter, on both catalogs; ``has_text`` and ``text`` filter by them. (No OCR model runs here: the text is given.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from xmodal.ocr_text import best_lines, clean, searchable
from xmodal.store.catalog import Catalog, ItemRecord, WriteRequest
from xmodal.store.filters import ItemFilter

pytest.importorskip("wordninja", reason="pip install 'xmodal[ocr]' (the dev extra)")

READ = {
    "museum.png": "TURNLEFTFORTHE\nmuseumofclocks",
    "ducks.png": "donotfeed the ducks",
    "welcome.png": "Weicome",
    "plain.png": None,
}


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Catalog:
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else f"sqlite:///{tmp_path}/c.db"
    catalog = Catalog.open(url)
    records = [
        ItemRecord(
            path=f"/photos/{name}",
            source="file:///photos",
            size=1,
            mtime_ns=1,
            modality="image",
            ocr_text=text,
            ocr_engine="test",
        )
        for name, text in READ.items()
    ]
    catalog.write_items([WriteRequest(record) for record in records])
    return catalog


def _names(catalog: Catalog, query: str) -> list[str]:
    items = catalog.get_items([item_id for item_id, _ in catalog.lexical_search(query, 10)])
    return [Path(items[i].path).name for i, _ in catalog.lexical_search(query, 10)]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("museum of clocks", "museum.png"),
        ("turn left", "museum.png"),
        ("do not feed", "ducks.png"),
        ("welcome", "welcome.png"),
    ],
)
def test_run_together_and_misread_words_are_found(catalog: Catalog, query: str, expected: str) -> None:
    assert _names(catalog, query)[0] == expected


def test_has_text_and_text_filters(catalog: Catalog) -> None:
    def names(*conditions: str) -> list[str]:
        ids = catalog.matching_ids(ItemFilter.parse(conditions))
        return sorted(Path(item.path).name for item in catalog.get_items(sorted(ids)).values())

    assert names("has_text=true") == ["ducks.png", "museum.png", "welcome.png"]
    assert names("has_text=false") == ["plain.png"]
    assert names("text=DUCKS") == ["ducks.png"]


def test_clean_splits_and_corrects() -> None:
    assert clean("NOPARKING ON TUESDAYS") == "no parking on tuesdays"
    assert clean("weicome") == "welcome"
    assert searchable("museumofclocks").split("\n")[1] == "museum of clocks"
    lines = [{"text": "NO PARKING", "start": 0, "end": 10}, {"text": "ONTUESDAYS", "start": 11, "end": 21}]
    assert best_lines(lines, "tuesdays") == [1]
    assert best_lines(lines, "cathedral") == []
