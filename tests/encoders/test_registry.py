"""Encoder specs, offline weights handling and fingerprints."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_settings
from xmodal.encoders import build_encoder
from xmodal.encoders.clip import OpenClipSource
from xmodal.errors import ConfigError, WeightsUnavailableError
from xmodal.modality import Modality


def test_spec_forms_parse() -> None:
    assert OpenClipSource.parse("ViT-B-32/laion2b_s34b_b79k") == OpenClipSource("ViT-B-32", "laion2b_s34b_b79k")
    assert OpenClipSource.parse("local-dir:/m") == OpenClipSource("local-dir:/m")
    assert OpenClipSource.parse("ViT-B-32@/w/x.pt") == OpenClipSource("ViT-B-32", checkpoint=Path("/w/x.pt"))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nonsense", "must start with one of"),
        ("word2vec:glove", "must start with one of"),
        ("open_clip:ViT-Nope", "Unknown open_clip architecture"),
        ("open_clip:ViT-B-32/no_such_tag", "no pretrained tag"),
        ("open_clip:/nowhere/weights.safetensors", "no open_clip_config.json beside it"),
    ],
)
def test_bad_specs_say_what_to_write(spec: str, message: str, tmp_path: Path, tiny_clip_dir: Path) -> None:
    with pytest.raises(ConfigError, match=message):  # open_clip's names are checked when it is first needed
        build_encoder(spec, make_settings(tmp_path, tiny_clip_dir)).load()


def test_missing_weights_offline_is_one_clear_paragraph(tmp_path: Path, tiny_clip_dir: Path) -> None:
    encoder = build_encoder("open_clip:ViT-B-32/laion2b_s34b_b79k", make_settings(tmp_path, tiny_clip_dir))
    with pytest.raises(WeightsUnavailableError) as raised:
        encoder.load()
    message = str(raised.value)
    assert "xmodal models pull open_clip:ViT-B-32/laion2b_s34b_b79k" in message
    assert "local-dir:" in message and "@/path/to/weights" in message
    assert str(tmp_path / "models") in message


def test_checkpoint_file_and_folder_give_the_same_model(tmp_path: Path, tiny_clip_dir: Path) -> None:
    settings = make_settings(tmp_path, tiny_clip_dir)
    from_folder = build_encoder(f"open_clip:local-dir:{tiny_clip_dir}", settings)
    from_file = build_encoder(f"open_clip:{tiny_clip_dir / 'open_clip_model.safetensors'}", settings)
    assert from_folder.fingerprint == from_file.fingerprint
    assert from_folder.modalities == {Modality.IMAGE, Modality.TEXT}
    vectors = from_file.encode_texts(["a red square"])
    assert vectors.shape == (1, 32)
    assert float((vectors**2).sum()) == pytest.approx(1.0, abs=1e-5)


def test_packaged_sentence_model_loads_offline(tmp_path: Path, tiny_clip_dir: Path) -> None:
    encoder = build_encoder("sentence:all-MiniLM-L6-v2", make_settings(tmp_path, tiny_clip_dir))
    assert encoder.dim == 384
    assert encoder.modalities == {Modality.TEXT}
    with pytest.raises(NotImplementedError):
        encoder.prepare_image(None)  # type: ignore[arg-type]


def test_a_failed_load_is_not_retried_at_every_query(
    tmp_path: Path, tiny_clip_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens there
    probes: list[float] = []
    from xmodal.encoders import clip, hub

    def counting_probe(timeout_s: float) -> str | None:
        probes.append(timeout_s)
        return hub.hub_offline_reason(timeout_s)

    monkeypatch.setattr(clip, "hub_offline_reason", counting_probe)
    settings = make_settings(tmp_path, tiny_clip_dir, hub_timeout_s=0.5, load_retry_s=3600)
    encoder = build_encoder("open_clip:ViT-B-32/laion2b_s34b_b79k", settings)
    for _ in range(3):
        with pytest.raises(WeightsUnavailableError, match="cannot be reached"):
            encoder.load()
    assert probes == [0.5]
