"""Screenshots of the search page for the README, over real data: Tux Paint's stamps and spoken captions.

    python docs/screenshots.py            # writes docs/screenshots/*.png

Copies the stamp images with their caption files and twenty spoken readings into a scratch folder, indexes it
(no CLIP weights are needed: the `text` space finds images through their captions, and readings through their
transcripts), serves it, and drives the page in headless Chromium (Debian `chromium`).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import live_server

from xmodal import Engine, Settings
from xmodal.api.app import create_app

STAMPS = Path("/usr/share/tuxpaint/stamps")
OUT = Path(__file__).resolve().parent / "screenshots"


def stage(folder: Path) -> None:
    for image in sorted(STAMPS.rglob("*.png")):
        caption = image.with_suffix(".txt")
        if caption.is_file():
            target = folder / image.parent.relative_to(STAMPS)
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(image, target / image.name)
            shutil.copy(caption, target / caption.name)
    for reading in sorted(STAMPS.rglob("*_desc.ogg"))[:20]:
        shutil.copy(reading, folder / f"reading-{reading.name}")


def main() -> None:
    chromium = shutil.which("chromium") or sys.exit("apt install chromium")
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        stage(Path(scratch) / "stamps")
        with Engine.open(settings=Settings(home=Path(scratch) / "home")) as engine:
            engine.index([Path(scratch) / "stamps"])
            with live_server(create_app(engine=engine)) as base, sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1280, "height": 860})
                page.goto(base + "/")
                page.fill("#query-text", "a big wild cat")
                page.press("#query-text", "Enter")
                expect(page.locator(".result").first).to_be_visible()
                page.locator(".result .why").first.click()
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(OUT / "search.png"))
                page.locator(".result .name").first.click()
                expect(page.locator("#detail")).to_be_visible()
                page.wait_for_function("document.querySelector('#detail-body img')?.naturalWidth > 0")
                page.screenshot(path=str(OUT / "detail.png"))
                page.click("#close-detail")
                page.uncheck("input[value=image]")
                page.fill("#query-text", "an animal that lives in the water")
                page.press("#query-text", "Enter")
                expect(page.locator(".result audio").first).to_be_visible()
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(OUT / "audio.png"))
                browser.close()
    print(f"wrote {', '.join(p.name for p in sorted(OUT.glob('*.png')))} in {OUT}")


if __name__ == "__main__":
    main()
