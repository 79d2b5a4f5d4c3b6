"""Without CLIP weights, the other spaces are indexed and the run says what it skipped and why."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import make_settings, write_corpus
from xmodal.config import DEFAULT_CLIP_ENCODER, Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine
from xmodal.errors import SpaceMismatchError, WeightsUnavailableError


def test_indexing_goes_on_without_clip_weights_and_catches_up_later(
    tmp_path: Path, tiny_clip_dir: Path, tiny_clap_dir: Path, encoder_pool: Callable[[str, Settings], Encoder]
) -> None:
    root = write_corpus(tmp_path / "corpus", images=6, texts=4)
    home = tmp_path / "home"
    offline = make_settings(home, tiny_clip_dir, tiny_clap_dir, clip_encoder=DEFAULT_CLIP_ENCODER)
    with Engine.open(settings=offline, build_encoder=encoder_pool) as engine:
        report = engine.index([root])
        assert report.indexed == 10 and report.failed == 0
        assert "clip" in report.spaces_unavailable
        assert "xmodal models pull" in report.spaces_unavailable["clip"]
        text_vectors = engine.spaces["text"].size
        assert text_vectors > 0
        response = engine.query(engine.build_query(text="river", k=3))
        assert sorted(response.spaces_searched) == ["clap", "lexical", "text"]
        with pytest.raises(WeightsUnavailableError):
            engine.search("river", space="clip")
        with pytest.raises(WeightsUnavailableError, match="xmodal models pull"):
            engine.search(image=root / "image_000.png")  # only clip embeds images: the remedy, not a 4xx

    with Engine.open(settings=make_settings(home, tiny_clip_dir, tiny_clap_dir), build_encoder=encoder_pool) as engine:
        catch_up = engine.index([root])
        assert catch_up.updated == 10 and not catch_up.spaces_unavailable
        assert engine.spaces["clip"].size >= 10  # every image and text, long texts in several chunks
        assert engine.spaces["text"].size == text_vectors  # re-embedded in place, not duplicated
        assert len(engine.search(image=root / "image_000.png", k=3)) == 3


def test_a_space_refuses_a_different_model(tmp_path: Path, tiny_clip_dir: Path, tiny_clap_dir: Path) -> None:
    import shutil

    import open_clip
    import torch
    from safetensors.torch import save_file

    other = tmp_path / "other_clip"
    other.mkdir()
    shutil.copy(tiny_clip_dir / "open_clip_config.json", other)
    torch.manual_seed(1)
    model = open_clip.create_model(f"local-dir:{other}", load_weights=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, other / "open_clip_model.safetensors")

    root = write_corpus(tmp_path / "corpus", images=3, texts=0)
    home = tmp_path / "home"
    with Engine.open(settings=make_settings(home, tiny_clip_dir, tiny_clap_dir)) as engine:
        engine.index([root])
    with Engine.open(settings=make_settings(home, other, tiny_clap_dir)) as engine:
        with pytest.raises(SpaceMismatchError, match="xmodal spaces drop clip"):
            engine.search("river", space="clip")
        with pytest.raises(SpaceMismatchError):
            engine.index([root])
        engine.drop_space("clip")
        assert engine.index([root]).updated == 3
