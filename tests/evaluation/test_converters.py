"""Converters: Karpathy-split JSON (a small file made here), Tux Paint's stamps and scikit-image's photos."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.conftest import random_image
from xmodal.errors import NotFoundError
from xmodal.evaluation.converters import TUXPAINT_STAMPS, karpathy, skimage_photos, tuxpaint
from xmodal.evaluation.manifest import Manifest, write_manifest


def _karpathy_dataset(folder: Path) -> Path:
    rng = random.Random(0)
    (folder / "val2014").mkdir(parents=True)
    images = []
    for number, split in enumerate(["test", "test", "train", "test"]):
        name = f"COCO_val2014_{number:012d}.jpg"
        random_image(rng).save(folder / "val2014" / name)
        sentences = [{"raw": f"picture {number} caption {c} ", "sentid": number * 10 + c} for c in range(5)]
        images.append({"filepath": "val2014", "filename": name, "imgid": number, "split": split,
                       "sentences": sentences})  # fmt: skip
    path = folder / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return path


def test_karpathy_split_gives_captions_and_images_of_the_split(tmp_path: Path) -> None:
    dataset = _karpathy_dataset(tmp_path / "coco")
    items, queries = karpathy(dataset, tmp_path / "coco", split="test")
    images = [i for i in items if i.file is not None]
    assert len(images) == 3 and len(items) == 3 + 15  # three test images, five captions each
    assert len(queries) == 15 + 3
    to_image = [q for q in queries if q.text is not None]
    assert all(len(q.relevant) == 1 and next(iter(q.relevant)).startswith("img-") for q in to_image)
    assert to_image[0].text == "picture 0 caption 0"  # stripped
    to_captions = [q for q in queries if q.file is not None]
    assert all(len(q.relevant) == 5 for q in to_captions)  # an image is answered by any of its captions
    write_manifest(tmp_path / "m.jsonl", items, queries)
    assert len(Manifest.load(tmp_path / "m.jsonl").queries) == 18


def test_karpathy_with_images_missing_says_which(tmp_path: Path) -> None:
    dataset = _karpathy_dataset(tmp_path / "coco")
    with pytest.raises(NotFoundError, match=r"COCO_val2014_000000000000\.jpg is missing"):
        karpathy(dataset, tmp_path / "elsewhere")


@pytest.mark.skipif(not TUXPAINT_STAMPS.is_dir(), reason="apt install tuxpaint-stamps-default (.ci/run does)")
def test_tux_paint_tasks() -> None:
    items, queries = tuxpaint()
    by_task: dict[str, int] = {}
    for query in queries:
        by_task[query.task or ""] = by_task.get(query.task or "", 0) + 1
    assert by_task["caption->image"] == by_task["image->caption"] > 500
    assert by_task["caption->reading"] == by_task["reading->caption"] > 50
    assert by_task["caption->effect"] == by_task["effect->caption"] > 50
    ids = {item.id for item in items}
    assert all(query.relevant <= ids for query in queries)
    assert all(item.id.split("-")[0] in {"cap", "img", "read", "fx"} for item in items)  # neutral ids only
    readings = [i for i in items if i.id.startswith("read-")]
    assert all(i.file is not None and i.file.name.endswith("_desc.ogg") for i in readings)
    only_images, _ = tuxpaint(tasks=["images"])
    assert not [i for i in only_images if i.file is not None and i.file.suffix == ".ogg"]


def test_unknown_tux_paint_task_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown Tux Paint tasks"):
        tuxpaint(tasks=["videos"])


def test_scikit_image_photos_with_docstring_captions(tmp_path: Path) -> None:
    pytest.importorskip("skimage", reason="the eval extra installs scikit-image")
    items, queries = skimage_photos(tmp_path / "photos")
    captions = {item.id: item.text for item in items if item.text}
    assert len(captions) >= 20 and len(queries) == 2 * len(captions)
    assert "Color image of the astronaut Eileen Collins." in captions.values()
    assert all((tmp_path / "photos").glob("*.png"))
    assert all(item.file.is_file() for item in items if item.file is not None)
