"""gs:// and az:// need a package xmodal does not install (gcsfs, adlfs): without it, the indexer says which one,
as a usage error (exit 2), and indexes nothing. With the package installed these tests are skipped (no
emulator for those stores runs here; S3 is tested against moto's server in test_buckets.py)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xmodal.errors import ConfigError
from xmodal.indexer.locations import Listing, parse_root, walk_roots

STORES = [("gs://media-bucket/photos", "gcsfs"), ("az://media-container/photos", "adlfs")]


def _missing(package: str) -> None:
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed: its store would be opened for real")


@pytest.mark.parametrize(("url", "package"), STORES)
def test_index_of_a_store_without_its_package_names_the_package(url: str, package: str, tmp_path: Path) -> None:
    _missing(package)
    home = tmp_path / "home"
    env = {**os.environ, "XMODAL_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "xmodal", "index", url, "--quiet"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr  # a usage error, not a failed run
    protocol = url.split(":", 1)[0]
    assert f"Cannot open {protocol}:// URLs" in done.stderr and f"pip install {package}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("url", "package"), STORES)
def test_shards_in_a_store_without_its_package_name_the_package(url: str, package: str, tmp_path: Path) -> None:
    _missing(package)
    pytest.importorskip("webdataset", reason="the cloud extra is not installed: pip install 'xmodal[cloud]'")
    listing = Listing(scratch_parent=tmp_path)
    walk = walk_roots([parse_root(f"{url}/{{00000..00003}}.tar")], listing=listing, known={},
                      text_extensions=[".txt"], include_hidden=False, on_error=lambda *_: None)  # fmt: skip
    with pytest.raises(ConfigError, match=f"pip install {package}"):
        list(walk)
    assert listing.prune_roots == [] and listing.unlisted == {}  # a setup error, not a listing of the store
