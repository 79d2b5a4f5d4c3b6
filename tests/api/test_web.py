"""The search page in a real headless Chromium (Debian `chromium`, driven by Playwright): type a query, drop an
image, see results, explain one, open one, ask for more like it, and page further by scrolling."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import live_server, write_corpus
from xmodal.api.app import create_app
from xmodal.engine import Engine

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="apt install chromium (.ci/run does)")
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")

DROP = """async ([data, name]) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, { type: "image/png" }));
  document.querySelector("#drop-zone").dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true }));
}"""


@pytest.fixture(params=["sqlite"])  # the browser adds nothing catalog-specific; one catalog is enough here
def settings(request: pytest.FixtureRequest, settings: object) -> object:
    return settings


@pytest.fixture
def page(engine: Engine, tmp_path: Path) -> Iterator[object]:
    engine.index([write_corpus(tmp_path / "corpus", images=40, texts=40)])
    with (
        live_server(create_app(engine=engine)) as base,
        sync_api.sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(base + "/")
        yield page
        browser.close()


def _shot(page: object, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("XMODAL_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name))  # type: ignore[attr-defined]


def test_search_drop_open_and_scroll(page, tmp_path: Path) -> None:
    expect = sync_api.expect
    page.fill("#query-text", "river mountain")
    page.press("#query-text", "Enter")
    results = page.locator(".result")
    expect(results).to_have_count(24)  # the first page
    expect(page.locator("#status")).to_contain_text("results")
    _shot(page, "text-query.png", tmp_path)

    page.locator(".result .why").first.click()
    expect(page.locator(".result .explanation").first).to_be_visible()
    assert page.locator(".result .explanation").first.locator("tr").count() >= 1

    page.locator("#sentinel").scroll_into_view_if_needed()  # infinite scroll asks for the next page
    expect(results).to_have_count(48)

    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), "green").save(buffer, format="PNG")
    page.evaluate(DROP, [base64.b64encode(buffer.getvalue()).decode(), "green.png"])
    expect(page.locator("#query-file")).to_be_visible()
    expect(page.locator("#query-file-name")).to_contain_text("green.png")
    expect(results.first).to_have_attribute("data-modality", "image")
    expect(page.locator(".result img").first).to_be_visible()
    _shot(page, "image-query.png", tmp_path)

    page.locator(".result .name").first.click()
    dialog = page.locator("#detail")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("dimensions")
    expect(dialog.locator("img")).to_be_visible()
    page.wait_for_function("document.querySelector('#detail-body img').naturalWidth > 0")  # it really loads
    _shot(page, "detail.png", tmp_path)
    page.click("#close-detail")
    expect(dialog).to_be_hidden()

    first_id = results.first.get_attribute("data-id")
    results.first.locator(".like").click()
    expect(page.locator("#query-file")).to_be_hidden()
    expect(results.first).not_to_have_attribute("data-id", first_id)  # the item itself is left out
    expect(page.locator(f'.result[data-id="{first_id}"]')).to_have_count(0)
    expect(results).to_have_count(24)


def test_a_new_search_is_not_held_back_by_one_still_answering(page) -> None:
    """A user types a query, then another before the first is answered (a slow server): the second runs at once,
    and the first one's late answer never lands under it (it once blocked the next search and then filled the
    page with its own results, marked with the new query's words)."""
    expect = sync_api.expect
    held: list[object] = []

    def hold_the_first(route) -> None:  # type: ignore[no-untyped-def]
        if held:
            route.continue_()
        else:
            held.append(route)  # answered only when the test says

    page.route("**/search", hold_the_first)
    with page.expect_request("**/search"):
        page.fill("#query-text", "mountain")
        page.press("#query-text", "Enter")
    page.fill("#query-text", "river")
    page.press("#query-text", "Enter")
    results = page.locator(".result")
    expect(results).to_have_count(24)  # the second search, while the first is still unanswered
    first_ids = [results.nth(i).get_attribute("data-id") for i in range(24)]
    with contextlib.suppress(Exception):  # the page cancelled it: nothing to answer
        held[0].continue_()  # type: ignore[attr-defined]  # the first search answers late (if it was not cancelled)
    page.fill("#query-where", "extension")  # a refused search shows its message, and nothing overwrites it
    page.press("#query-text", "Enter")
    expect(page.locator("#status")).to_contain_text("Filter 'extension' is not of the form key=value")
    assert [results.nth(i).get_attribute("data-id") for i in range(results.count())] == first_ids
    expect(page.locator("#status")).to_have_class("error")


def test_a_bad_query_shows_the_servers_message(page) -> None:
    expect = sync_api.expect
    page.fill("#query-text", "river " * 2000)  # over XMODAL_MAX_QUERY_CHARS
    page.press("#query-text", "Enter")
    expect(page.locator("#status")).to_have_class("error")
    expect(page.locator("#status")).to_contain_text("422")
    expect(page.locator(".result")).to_have_count(0)


def test_the_landing_page_shows_the_home_and_the_page_says_what_it_did_not_use(page) -> None:
    expect = sync_api.expect
    overview = page.locator("#overview")
    expect(overview).to_be_visible()  # not an empty grey page
    expect(page.locator("#overview-counts")).to_contain_text("40 image")
    expect(page.locator("#overview-counts")).to_contain_text("40 text")
    expect(page.locator("#overview-spaces tbody tr")).to_have_count(3)
    expect(page.locator("#overview-spaces")).to_contain_text("clip")
    expect(page.locator("#overview-run")).to_contain_text("finished")
    examples = page.locator("#overview .example")
    assert examples.count() >= 1
    examples.first.click()  # an example query runs
    expect(page.locator(".result")).to_have_count(24)
    expect(overview).to_be_hidden()

    first = page.locator(".result").first
    name = first.locator(".name").text_content()
    first.locator(".like").click()
    expect(page.locator("#query-like")).to_be_visible()  # "more like this" shows the item it started from
    expect(page.locator("#query-like-name")).to_have_text(f"more like: {name}")

    page.fill("#query-text", "river")
    page.fill("#query-where", "extension")  # no '=': refused with a message, not dropped
    page.press("#query-text", "Enter")
    expect(page.locator("#status")).to_have_class("error")
    expect(page.locator("#status")).to_contain_text("Filter 'extension' is not of the form key=value")
    page.fill("#query-where", "")

    # What the API says it left out is shown; an audio card gives its length before it is played.
    def answer(route) -> None:  # type: ignore[no-untyped-def]
        hit = {
            "id": 1, "score": 0.5, "modality": "audio", "path": "/m/bell.wav", "media_type": "audio/x-wav",
            "caption": None, "text_excerpt": None, "metadata": {}, "width": None, "height": None, "space_scores": {},
            "match": None, "content_url": "/items/1/content", "thumbnail_url": None, "duration": 72.4,
        }  # fmt: skip
        body = {
            "results": [hit], "spaces_searched": ["text"], "spaces_unavailable": {"clip": "weights missing"},
            "parts_ignored": {"image#1": "clip: weights missing"}, "next_cursor": None, "timings": {},
        }  # fmt: skip
        route.fulfill(json=body)

    page.route("**/search", answer)
    page.press("#query-text", "Enter")
    expect(page.locator("#notice")).to_be_visible()
    expect(page.locator("#notice")).to_have_text("image not used: clip: weights missing")
    expect(page.locator(".result .duration")).to_have_text("1:12")
