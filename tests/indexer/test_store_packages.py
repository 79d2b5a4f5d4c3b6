"""A store whose fsspec package is missing (gcsfs for gs://, adlfs for az://): the indexer says which package to
install, as a usage error (exit 2), and indexes nothing. The CLI runs as a subprocess in which that package cannot
be imported, whether or not this environment has it (the dev extra installs gcsfs, for test_gcs.py)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xmodal.errors import ConfigError
from xmodal.indexer.locations import Listing, parse_root, walk_roots

STORES = [("gs://media-bucket/photos", "gcsfs"), ("az://media-container/photos", "adlfs")]

WITHOUT = """
import runpy, sys
sys.modules[sys.argv[1]] = None  # the package is not installed: importing it raises ImportError
sys.argv = ["xmodal", *sys.argv[2:]]
runpy.run_module("xmodal", run_name="__main__")
"""


@pytest.mark.parametrize(("url", "package"), STORES)
def test_index_of_a_store_without_its_package_names_the_package(url: str, package: str, tmp_path: Path) -> None:
    env = {**os.environ, "XMODAL_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT, package, "index", url, f"{url}/{{00000..00003}}.tar", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr  # a usage error, not a failed run
    protocol = url.split(":", 1)[0]
    assert f"Cannot open {protocol}:// URLs" in done.stderr and f"pip install {package}" in done.stderr
    assert "Traceback" not in done.stderr


def test_shards_in_a_store_without_its_package_are_a_setup_error_not_a_listing_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = importlib.import_module("fsspec.registry")  # the module (`fsspec.registry` is its mapping)
    monkeypatch.setitem(sys.modules, "adlfs", None)  # as if it were not installed (the dev extra installs it)
    monkeypatch.delitem(registry._registry, "az", raising=False)  # the class fsspec may have imported earlier
    pytest.importorskip("webdataset", reason="the cloud extra is not installed: pip install 'xmodal[cloud]'")
    listing = Listing(scratch_parent=tmp_path)
    walk = walk_roots(
        [parse_root("az://media-container/shards/{00000..00003}.tar")],
        listing=listing,
        known_samples=lambda _: [],
        text_extensions=[".txt"],
        include_hidden=False,
        on_error=lambda *_: None,
    )
    with pytest.raises(ConfigError, match="pip install adlfs"):
        list(walk)
    assert listing.prune_roots == [] and listing.unlisted == {}  # nothing was taken for a listing of the store
