"""Manifests from datasets people have: Tux Paint's stamps, scikit-image's sample photos, Karpathy-split JSON.

Each converter returns the manifest's items and queries; :func:`~xmodal.evaluation.manifest.write_manifest`
writes them. Item ids are neutral (``img-0007``), never a file or stamp name, so only content can be matched.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from pathlib import Path

from xmodal.errors import NotFoundError
from xmodal.evaluation.manifest import ManifestItem, ManifestQuery
from xmodal.indexer.decode import caption_from_sidecar

TUXPAINT_STAMPS = Path("/usr/share/tuxpaint/stamps")
TUXPAINT_TASKS = ("images", "readings", "effects")
# scikit-image sample photos that ship inside the package (others are downloaded on first use)
SKIMAGE_PHOTOS = (
    "astronaut", "brick", "camera", "cat", "cell", "clock", "coffee", "coins", "colorwheel", "grass", "gravel",
    "horse", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "moon", "page", "retina",
    "rocket", "text", "checkerboard",
)  # fmt: skip

Converted = tuple[list[ManifestItem], list[ManifestQuery]]


def tuxpaint(stamps: Path = TUXPAINT_STAMPS, tasks: Sequence[str] = TUXPAINT_TASKS) -> Converted:
    """Tux Paint stamps (Debian ``tuxpaint-stamps-default``): each written caption with its stamp image
    (``images``: caption -> image and image -> caption), its spoken English reading (``readings``: caption ->
    reading and reading -> caption) and its sound effect (``effects``: caption -> effect and effect -> caption)."""
    unknown = set(tasks) - set(TUXPAINT_TASKS)
    if unknown:
        raise ValueError(f"unknown Tux Paint tasks {sorted(unknown)}; choose from {', '.join(TUXPAINT_TASKS)}")
    if not stamps.is_dir():
        raise NotFoundError(f"No Tux Paint stamps at {stamps}: apt install tuxpaint-stamps-default")
    items: list[ManifestItem] = []
    queries: list[ManifestQuery] = []
    for number, sidecar in enumerate(sorted(stamps.rglob("*.txt"))):
        caption = caption_from_sidecar(sidecar.read_bytes(), 500)
        if not caption:
            continue
        stem = sidecar.with_suffix("")
        image, reading, effect = stem.with_suffix(".png"), Path(f"{stem}_desc.ogg"), stem.with_suffix(".ogg")
        caption_id = f"cap-{number:04d}"
        media = [("images", "img", image), ("readings", "read", reading), ("effects", "fx", effect)]
        present = [(task, prefix, path) for task, prefix, path in media if task in tasks and path.is_file()]
        if not present:
            continue
        items.append(ManifestItem(caption_id, text=caption))
        for task, prefix, path in present:
            media_id = f"{prefix}-{number:04d}"
            items.append(ManifestItem(media_id, file=path))
            kind = {"images": "image", "readings": "reading", "effects": "effect"}[task]
            queries.append(ManifestQuery(f"q-{media_id}", frozenset({media_id}), text=caption, task=f"caption->{kind}"))
            reverse_id = f"q-{caption_id}-{prefix}"
            queries.append(ManifestQuery(reverse_id, frozenset({caption_id}), file=path, task=f"{kind}->caption"))
    return items, queries


def skimage_photos(folder: Path) -> Converted:
    """scikit-image's bundled sample photos, saved as PNGs into ``folder``, with their docstrings' first
    sentence as the caption (caption -> photo and photo -> caption)."""
    try:
        import numpy as np
        import skimage.data
        from PIL import Image
    except ImportError as exc:
        raise NotFoundError("The scikit-image converter needs scikit-image: pip install 'xmodal[eval]'") from exc
    folder.mkdir(parents=True, exist_ok=True)
    items: list[ManifestItem] = []
    queries: list[ManifestQuery] = []
    for number, name in enumerate(SKIMAGE_PHOTOS):
        loader = getattr(skimage.data, name, None)
        if loader is None:
            continue
        pixels = np.asarray(loader())
        if pixels.dtype == bool:
            pixels = pixels.astype(np.uint8) * 255
        path = folder / f"photo{number:02d}.png"
        Image.fromarray(pixels).save(path)
        caption = " ".join((inspect.getdoc(loader) or name).split("\n\n")[0].split())
        photo_id, caption_id = f"img-{number:02d}", f"cap-{number:02d}"
        items += [ManifestItem(photo_id, file=path), ManifestItem(caption_id, text=caption)]
        queries.append(ManifestQuery(f"q-{photo_id}", frozenset({photo_id}), text=caption, task="caption->photo"))
        queries.append(ManifestQuery(f"q-{caption_id}", frozenset({caption_id}), file=path, task="photo->caption"))
    return items, queries


def karpathy(dataset_json: Path, images: Path, split: str = "test") -> Converted:
    """Flickr30k / MSCOCO in Karpathy's split format (``dataset_flickr30k.json``, ``dataset_coco.json``): the
    split's images, each with its captions (caption -> image; image -> any of its captions)."""
    if not dataset_json.is_file():
        raise NotFoundError(f"No Karpathy-split file at {dataset_json}")
    data = json.loads(dataset_json.read_text(encoding="utf-8"))
    items: list[ManifestItem] = []
    queries: list[ManifestQuery] = []
    for entry in data.get("images", []):
        if entry.get("split") != split:
            continue
        path = images / entry.get("filepath", "") / entry["filename"]
        if not path.is_file():
            raise NotFoundError(f"{path} is missing: give the folder holding the dataset's images with --images")
        image_id = f"img-{entry.get('imgid', len(items))}"
        items.append(ManifestItem(image_id, file=path))
        caption_ids = []
        for number, sentence in enumerate(entry.get("sentences", [])):
            caption_id = f"cap-{sentence.get('sentid', f'{image_id}-{number}')}"
            caption_ids.append(caption_id)
            items.append(ManifestItem(caption_id, text=sentence["raw"].strip()))
            queries.append(ManifestQuery(f"q-{caption_id}", frozenset({image_id}), text=sentence["raw"].strip()))
        if caption_ids:
            queries.append(ManifestQuery(f"q-{image_id}", frozenset(caption_ids), file=path))
    if not items:
        raise NotFoundError(f"{dataset_json} has no images in split '{split}'")
    return items, queries
