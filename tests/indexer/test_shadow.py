"""The new version of a switching space is built by index runs: an interrupted run loses at most a checkpoint,
the next run continues, the current version's rows are never touched, and a file changed meanwhile is embedded
again by both models. Runs on SQLite and PostgreSQL (this package's ``settings``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import random_image, write_corpus
from xmodal.config import Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine
from xmodal.indexer import shadow as shadow_build


def test_an_interrupted_build_continues_and_leaves_the_current_version_alone(
    settings: Settings,
    tmp_path: Path,
    encoder_pool: Callable[[str, Settings], Encoder],
    other_tiny_clip_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import random

    settings = settings.model_copy(update={"batch_size": 2, "checkpoint_every": 2})
    library = write_corpus(tmp_path / "library", images=8, texts=2, seed=5)
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        engine.index([library])
        current_rows = sorted(engine.catalog.vector_ids("clip"))
        engine.switch_space("clip", f"open_clip:local-dir:{other_tiny_clip_dir}")

        real_embed = shadow_build.embed_batch
        calls = []

        def dies_on_the_third_batch(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("power cut")
            return real_embed(*args, **kwargs)

        monkeypatch.setattr(shadow_build, "embed_batch", dies_on_the_third_batch)
        with pytest.raises(RuntimeError, match="power cut"):
            engine.index([library])
        monkeypatch.setattr(shadow_build, "embed_batch", real_embed)
        built = engine.switch_state("clip")
        assert built.covered == 4 and built.total == 10  # two batches of 2 were published before the cut

        changed = library / "image_001.png"
        item_id = engine.catalog.file_states([str(changed)])[str(changed)].item_id
        had_new_vectors = bool(engine.catalog.embeddings_of(item_id, "clip@v2"))
        changed.unlink()
        random_image(random.Random(99)).save(changed)  # changed meanwhile: both models embed it again
        report = engine.index([library])
        assert report.updated == 1 and report.shadows["clip"].promoted
        assert report.shadows["clip"].embedded == 6 + had_new_vectors  # those left after the cut, the changed one
        assert engine.spaces["clip"].version == 2

        # the old version's rows are those it had, except the changed file's, which has a new one
        old_rows = set(engine.catalog.vector_ids("clip"))
        assert len(old_rows) == len(current_rows) and len(old_rows - set(current_rows)) == 1
        # every row of the new version is published once, and nothing else is (the cut left no orphan)
        new_rows = sorted(engine.catalog.vector_ids("clip@v2"))
        published = engine.spaces["clip"].stored_index().ids()
        assert np.array_equal(published, new_rows) and len(new_rows) == len(old_rows)
