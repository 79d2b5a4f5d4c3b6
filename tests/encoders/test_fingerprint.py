"""Model fingerprints hash the weights' bytes; spaces fingerprinted the old way (float sums) keep working."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import make_settings, write_corpus
from xmodal.encoders import base
from xmodal.encoders.base import fingerprint_module, legacy_fingerprint_module
from xmodal.engine import Engine
from xmodal.errors import SpaceMismatchError


def _module(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.LayerNorm(16))


def test_the_same_weights_give_the_same_fingerprint_and_any_change_another() -> None:
    module, copy = _module(), _module()
    assert fingerprint_module("m", module) == fingerprint_module("m", copy)
    assert fingerprint_module("m", module) != fingerprint_module("other config", module)
    with torch.no_grad():  # swap two weights past the first 16: the float sum cannot see it
        weight = copy[0].weight.view(-1)
        weight[100], weight[200] = weight[200].clone(), weight[100].clone()
    assert legacy_fingerprint_module("m", module) == legacy_fingerprint_module("m", copy)
    assert fingerprint_module("m", module) != fingerprint_module("m", copy)
    with torch.no_grad():
        copy[0].weight.view(-1)[300] = torch.nextafter(copy[0].weight.view(-1)[300], torch.tensor(1.0))
    assert fingerprint_module("m", copy) != fingerprint_module("m", _module())  # one ulp is another model


def test_the_fingerprint_does_not_depend_on_where_or_how_the_weights_are_laid_out() -> None:
    module = _module()
    transposed = _module()
    with torch.no_grad():  # the same values in a non-contiguous tensor
        transposed[0].weight = torch.nn.Parameter(module[0].weight.detach().t().contiguous().t())
    assert not transposed[0].weight.is_contiguous()
    assert fingerprint_module("m", module) == fingerprint_module("m", transposed)


def test_a_home_fingerprinted_the_old_way_opens_and_is_upgraded(
    tmp_path: Path, tiny_clip_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_corpus(tmp_path / "corpus", images=3, texts=1)
    home = tmp_path / "home"
    settings = make_settings(home, tiny_clip_dir, speech_model="")
    with monkeypatch.context() as old_version:  # an xmodal from before fingerprints hashed bytes
        old_version.setattr(base, "fingerprint_module", legacy_fingerprint_module)
        with Engine.open(settings=settings) as engine:
            engine.index([root])
            old = engine.spaces["clip"].stored_index().manifest.fingerprint
            assert old == legacy_fingerprint_module(*engine.spaces["clip"].encoder._fingerprinted)
    with Engine.open(settings=settings) as engine:
        assert engine.spaces["clip"].encoder.fingerprint != old
        assert len(engine.search("river", space="clip", k=3)) == 3  # no SpaceMismatchError
        (root / "later.txt").write_text("a boat on the river at night")
        assert engine.index([root]).indexed == 1
        stored = engine.spaces["clip"].stored_index().manifest.fingerprint
        assert stored == engine.spaces["clip"].encoder.fingerprint  # the save stored the new style
    with Engine.open(settings=settings) as engine:
        assert len(engine.search("river", space="clip", k=3)) == 3


def test_an_old_style_fingerprint_of_other_weights_is_still_refused(
    tmp_path: Path, tiny_clip_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_corpus(tmp_path / "corpus", images=2, texts=0)
    home = tmp_path / "home"
    with monkeypatch.context() as old_version:
        old_version.setattr(base, "fingerprint_module", lambda d, m: legacy_fingerprint_module(d + "other", m))
        with Engine.open(settings=make_settings(home, tiny_clip_dir, speech_model="")) as engine:
            engine.index([root])
    settings = make_settings(home, tiny_clip_dir, speech_model="")
    with Engine.open(settings=settings) as engine, pytest.raises(SpaceMismatchError):
        engine.search("river", space="clip")
