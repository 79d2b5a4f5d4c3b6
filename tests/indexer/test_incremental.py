"""Re-indexing: unchanged files embed nothing; a touched file is embedded again, alone."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_corpus
from xmodal.engine import Engine


def _sizes(engine: Engine) -> dict[str, int]:
    return {space.name: space.size for space in engine.spaces}


def test_unchanged_tree_embeds_nothing(engine: Engine, tmp_path: Path) -> None:
    root = write_corpus(tmp_path / "corpus", images=10, texts=10)
    first = engine.index([root])
    assert first.indexed == 20 and first.vectors_added > 0
    sizes = _sizes(engine)

    second = engine.index([root])
    assert (second.indexed, second.updated, second.vectors_added) == (0, 0, 0)
    assert second.unchanged == 20
    assert _sizes(engine) == sizes


def test_touching_one_file_re_embeds_that_one_only(engine: Engine, tmp_path: Path) -> None:
    root = write_corpus(tmp_path / "corpus", images=10, texts=10)
    engine.index([root])
    sizes = _sizes(engine)
    target = root / "image_003.png"
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    report = engine.index([root])
    assert (report.updated, report.indexed, report.unchanged) == (1, 0, 19)
    assert report.vectors_added == 1  # its clip vector; it has no caption for the text space
    assert _sizes(engine) == sizes  # replaced, not duplicated


def test_changing_a_caption_re_embeds_its_image(engine: Engine, tmp_path: Path) -> None:
    root = write_corpus(tmp_path / "corpus", images=4, texts=0)
    engine.index([root])
    (root / "image_000.txt").write_text("a lighthouse on a stormy island")
    os.utime(root / "image_000.txt", ns=(0, 10**18))
    report = engine.index([root])
    assert report.updated == 1
    top = engine.search("lighthouse island storm", k=1, space="text")[0]
    assert Path(top.path).name == "image_000.png"
    assert top.caption == "a lighthouse on a stormy island"


def test_sidecar_caption_is_not_indexed_as_its_own_item(engine: Engine, tmp_path: Path) -> None:
    root = write_corpus(tmp_path / "corpus", images=4, texts=0)
    report = engine.index([root])
    assert report.indexed == 4
    assert engine.stats().items_by_modality == {"image": 4}


def test_out_of_gpu_memory_mid_run_halves_the_batch_and_indexes_everything(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    root = write_corpus(tmp_path / "corpus", images=40, texts=0)
    clip = engine.spaces["clip"].encoder
    real = clip._encode_prepared_images
    seen: list[int] = []

    def small_gpu(prepared: list) -> np.ndarray:
        seen.append(len(prepared))
        if len(prepared) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(prepared)

    monkeypatch.setattr(clip, "_encode_prepared_images", small_gpu)
    report = engine.index([root])
    assert report.indexed == 40 and report.failed == 0
    assert engine.spaces["clip"].size == 40  # nothing lost to the failed batches
    # the image sizer halved until a batch fit, then stayed there (each space and input kind has its own sizer)
    assert max(seen) == engine.settings.batch_size and seen[-1] <= 4 and all(n <= 4 for n in seen[seen.index(4) :])
