"""This package's tests run on both catalogs: SQLite, and PostgreSQL when XMODAL_TEST_POSTGRES_URL is set."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import settings_on_each_catalog
from xmodal.config import Settings


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path, tiny_clip_dir: Path, tiny_clap_dir: Path) -> Settings:
    return settings_on_each_catalog(request, tmp_path / "home", tiny_clip_dir, tiny_clap_dir)
