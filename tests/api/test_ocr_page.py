"""The search page draws the OCR lines a query matched over the thumbnail and over the picture in the detail view
(real headless Chromium, as in test_web.py)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.api.test_web import CHROMIUM, sync_api
from tests.conftest import live_server, random_image
from tests.ocr_fixtures import FONT, sign
from xmodal.api.app import create_app
from xmodal.config import Settings
from xmodal.encoders.base import Encoder
from xmodal.encoders.ocr import TextReader, ocr_supported
from xmodal.engine import Engine

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="apt install chromium (.ci/run does)"),
    pytest.mark.skipif(not ocr_supported(), reason="pip install 'xmodal[ocr]' (the dev extra)"),
    pytest.mark.skipif(not FONT.exists(), reason="apt install fonts-dejavu-core (.ci/run does)"),
]


@pytest.fixture(params=["sqlite"])  # the page adds nothing catalog-specific
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    return settings.model_copy(update={"ocr": True})


@pytest.fixture
def page(settings: Settings, encoder_pool: Callable[[str, Settings], Encoder], tmp_path: Path) -> Iterator[object]:
    root = tmp_path / "photos"
    root.mkdir()
    sign(["NO PARKING", "ON TUESDAYS"]).save(root / "street.png")
    for number in range(3):
        random_image(random.Random(number), size=(120, 90)).save(root / f"shapes_{number}.png")
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        engine.text_reader = TextReader()
        engine.index([root])
        with live_server(create_app(engine=engine)) as base, sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(base + "/")
            yield page
            browser.close()


def _inside(inner: dict[str, float], outer: dict[str, float]) -> bool:
    return (
        outer["x"] - 1 <= inner["x"]
        and outer["y"] - 1 <= inner["y"]
        and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 1
        and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + 1
    )


def test_the_page_draws_the_matched_words_box(page) -> None:
    expect = sync_api.expect
    page.fill("#query-text", "no parking on tuesdays")
    page.press("#query-text", "Enter")
    first = page.locator(".result").first
    expect(first.locator(".name")).to_have_text("street.png")
    box = first.locator(".ocr-box").first
    expect(box).to_be_visible()
    image = first.locator(".media img")
    expect(image).to_be_visible()
    assert _inside(box.bounding_box(), image.bounding_box())
    assert first.locator(".ocr-box").count() >= 1
    expect(first.locator(".snippet")).to_contain_text("PARKING")

    first.locator(".why").click()
    expect(first.locator(".explanation")).to_contain_text("(ocr)")

    first.locator(".name").click()
    detail = page.locator("#detail")
    expect(detail.locator(".ocr-box").first).to_be_visible()
    # the detail rendition is fetched after the dialog opens: measure once it has loaded
    page.wait_for_function(
        "() => { const i = document.querySelector('#detail img'); return i && i.complete && i.naturalWidth > 0; }"
    )
    assert _inside(detail.locator(".ocr-box").first.bounding_box(), detail.locator("img").bounding_box())
    expect(detail).to_contain_text("words in the image")
