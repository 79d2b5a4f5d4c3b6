"""The search page's landing view shows a space switching model: the new model and the share built, in a real
headless Chromium; after the switch, the model kept for rollback."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import live_server, write_corpus
from xmodal.api.app import create_app
from xmodal.config import Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="apt install chromium (.ci/run does)")
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")


@pytest.fixture(params=["sqlite"])  # the browser adds nothing catalog-specific
def settings(request: pytest.FixtureRequest, settings: object) -> object:
    return settings


def test_the_landing_page_shows_both_versions(
    settings: Settings, tmp_path: Path, encoder_pool: Callable[[str, Settings], Encoder], other_tiny_clip_dir: Path
) -> None:
    library = write_corpus(tmp_path / "corpus", images=3, texts=1)
    new_model = f"open_clip:local-dir:{other_tiny_clip_dir}"
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        engine.index([library])
        engine.switch_space("clip", new_model)
        engine.index([library], max_items=1)  # 1 of 4 items built
        with live_server(create_app(engine=engine)) as base, sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(base + "/")
            row = page.locator("#overview-spaces tbody tr").first
            sync_api.expect(row).to_contain_text(f"switching to {new_model} (version 2): 25% built")
            engine.promote_space("clip")
            page.reload()
            row = page.locator("#overview-spaces tbody tr").first
            sync_api.expect(row).to_contain_text(f"{new_model} (version 2)")
            sync_api.expect(row).to_contain_text("previous model kept for rollback")
            browser.close()
