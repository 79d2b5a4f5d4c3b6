"""Words in pictures: signs are found by what they say, the words and their boxes come back with the result, a
photo without words gets none, turned text is read, and images indexed before OCR get it on the next run without
being embedded again."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import random_image
from tests.ocr_fixtures import FONT, photo, sign
from xmodal.config import Settings
from xmodal.encoders.base import Encoder
from xmodal.encoders.ocr import TextReader, ocr_supported
from xmodal.engine import Engine
from xmodal.ocr_text import clean

pytestmark = [
    pytest.mark.skipif(not ocr_supported(), reason="pip install 'xmodal[ocr]' (the dev extra)"),
    pytest.mark.skipif(not FONT.exists(), reason="apt install fonts-dejavu-core (.ci/run does)"),
]


@pytest.fixture(scope="module")
def reader() -> TextReader:
    reader = TextReader()
    reader.load()
    return reader


def _open(settings: Settings, encoder_pool: Callable[[str, Settings], Encoder], reader: TextReader) -> Engine:
    engine = Engine.open(settings=settings, build_encoder=encoder_pool)
    engine.text_reader = reader  # one loaded reader for the module
    return engine


@pytest.fixture
def ocr_engine(
    settings: Settings, encoder_pool: Callable[[str, Settings], Encoder], reader: TextReader
) -> Iterator[Engine]:
    with _open(settings.model_copy(update={"ocr": True}), encoder_pool, reader) as engine:
        yield engine


def _corpus(root: Path) -> Path:
    root.mkdir(parents=True)
    sign(["NO PARKING", "ON TUESDAYS"]).save(root / "street.png")
    sign(["Welcome to the", "museum of clocks"], ground="#26a269").save(root / "entrance.png")
    photo().save(root / "coffee.jpg")
    for number in range(3):
        random_image(random.Random(number)).save(root / f"shapes_{number}.png")
    return root


def test_a_sign_is_found_by_its_words(ocr_engine: Engine, tmp_path: Path) -> None:
    report = ocr_engine.index([_corpus(tmp_path / "photos")])
    assert report.ocr_read == 6 and report.ocr_with_text == 2

    top = ocr_engine.search("no parking on tuesdays", k=3, explain=True)[0]
    assert top.path.endswith("street.png")
    assert top.ocr is not None and "PARKING" in top.ocr.text.upper()
    x0, y0, x1, y1 = _bounds(top.ocr.boxes)
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1  # fractions of the image's width and height
    assert any(c.origin == "ocr" for c in top.explanation)
    assert top.caption is None  # the words are the image's own text, not a caption
    # The text space alone (its own search scores the hits): its best chunk of the image is the OCR text.
    alone = ocr_engine.search("no parking on tuesdays", k=3, space="text", explain=True)[0]
    assert alone.path.endswith("street.png") and alone.ocr is not None
    assert [(c.space, c.origin) for c in alone.explanation] == [("text", "ocr")]

    museum = ocr_engine.search("museum", k=1, space="lexical")[0]
    assert museum.path.endswith("entrance.png") and "museum" in museum.ocr.text.lower()

    with_text = ocr_engine.search("sign", k=10, where={"has_text": "true"})
    assert sorted(Path(r.path).name for r in with_text) == ["entrance.png", "street.png"]
    assert [Path(r.path).name for r in ocr_engine.search("sign", k=10, where={"text": "tuesdays"})] == ["street.png"]


def test_a_photo_without_words_gets_no_text(ocr_engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    photo().save(root / "coffee.jpg")
    ocr_engine.index([root])
    item = ocr_engine.catalog.get_items([1])[1]
    assert item.ocr_engine is not None  # it was read ...
    assert item.ocr_text is None and item.ocr_lines is None  # ... and holds no words
    assert ocr_engine.search("coffee", k=5, where={"has_text": "true"}) == []


@pytest.mark.parametrize("angle", [90, 15])
def test_turned_text_is_read(reader: TextReader, angle: int) -> None:
    result = reader.read(sign(["DO NOT FEED", "THE DUCKS"], angle=angle))
    assert {"not", "feed", "ducks"} <= set(clean(result.text or "").split())
    assert all(0 <= line.confidence <= 1 for line in result.lines)
    assert [line.order for line in result.lines] == list(range(len(result.lines)))


def test_a_rerun_reads_images_indexed_before_ocr_without_embedding_them_again(
    settings: Settings,
    encoder_pool: Callable[[str, Settings], Encoder],
    reader: TextReader,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = _corpus(tmp_path / "photos")
    with _open(settings, encoder_pool, reader) as engine:  # OCR off: as before the extra was installed
        first = engine.index([root])
        assert first.ocr_read == 0
        before = {space.name: space.size for space in engine.spaces}
        assert engine.search("parking", k=1, where={"has_text": "true"}) == []

    with _open(settings.model_copy(update={"ocr": True}), encoder_pool, reader) as engine:
        clip = engine.spaces["clip"].encoder

        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError("an image was embedded again")

        monkeypatch.setattr(clip, "encode_prepared_images", refuse)
        monkeypatch.setattr(clip, "encode_images", refuse)
        second = engine.index([root])
        assert (second.ocr_read, second.ocr_with_text, second.indexed) == (6, 2, 0)
        assert engine.spaces["clip"].size == before["clip"]
        assert engine.spaces["text"].size > before.get("text", 0)  # the signs' words, embedded as text
        assert engine.search("no parking on tuesdays", k=1)[0].path.endswith("street.png")

        third = engine.index([root])  # covered now: nothing to do
        assert (third.ocr_read, third.updated, third.unchanged) == (0, 0, 6)


def test_without_the_extra_images_are_indexed_and_one_line_says_why_not_read(
    ocr_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("xmodal.indexer.runner.ocr_supported", lambda: False)
    report = ocr_engine.index([_corpus(tmp_path / "photos")])
    assert report.indexed == 6 and report.ocr_read == 0
    assert (
        report.spaces_unavailable["ocr"]
        == "OCR is not installed, images are not read for text: pip install 'xmodal[ocr]'"
    )


def _bounds(boxes: tuple[tuple[tuple[float, float], ...], ...]) -> tuple[float, float, float, float]:
    xs = [x for box in boxes for x, _ in box]
    ys = [y for box in boxes for _, y in box]
    return min(xs), min(ys), max(xs), max(ys)
