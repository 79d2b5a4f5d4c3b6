"""Words in pictures: how well xmodal reads text in photos and finds the photos by it.

    python benchmarks/ocr_quality.py              # 24 phrases on 24 photos, 24 untouched photos as distractors
    python benchmarks/ocr_quality.py --phrases 48

Data, all real and on this machine: photos from scikit-image's bundled samples and Tux Paint's stamps (Debian
``tuxpaint-stamps-default``, drawn on a plain ground), phrases from Debian's ``fortunes`` (one-line sayings of 4
to 8 words). Each phrase is rendered onto one photo with DejaVu fonts, cycling through sizes (20/28/36 px),
faces (sans, sans bold, serif, mono), angles (0, 8, -15, 90 degrees) and contrasts (on a light plate; straight on
the photo in black or white; low contrast, ±70 grey levels from the photo around it; every angle meets every
contrast equally often); the untouched photos are
the distractors. Everything is indexed with the default engine (OCR on; CLIP answers only if its weights are
cached).

Printed: the character error rate of the OCR text against the phrase (raw, and after xmodal's word clean-up:
split run-together words, corrected letters), by condition; text -> image Recall@1/5/10 for four kinds of query:
the exact phrase, a reworded one (its content words only, in reverse order), a human paraphrase (other words for the
same meaning, from ``benchmarks/data/fortune_paraphrases.tsv``, written for the phrases ``--seed 0`` draws; phrases
without one are left out of that row), and a partial phrase (three consecutive words); and OCR images per second on
images with text and without. Results go to ``benchmarks/results/ocr_quality.json``.
"""

from __future__ import annotations

import argparse
import random
import re
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import jellyfish
import numpy as np
from common import recall_at, write_result
from PIL import Image, ImageDraw, ImageFont, ImageStat

from xmodal.config import Settings
from xmodal.encoders.ocr import TextReader, ocr_supported
from xmodal.engine import Engine
from xmodal.ocr_text import clean

FORTUNES = Path("/usr/share/games/fortunes/fortunes")
PARAPHRASES = Path(__file__).parent / "data" / "fortune_paraphrases.tsv"
STAMPS = Path("/usr/share/tuxpaint/stamps")
FONTS = Path("/usr/share/fonts/truetype/dejavu")
FACES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")
SIZES = (20, 28, 36)
ANGLES = (0, 8, -15, 90)
CONTRASTS = ("plate", "plain", "low")
SAMPLES = (
    "astronaut",
    "camera",
    "coffee",
    "chelsea",
    "coins",
    "rocket",
    "moon",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "grass",
    "gravel",
    "brick",
    "cat",
    "colorwheel",
)
_STOP_WORDS = (
    "a an the and or of to in on at is are was were be been it its this that for with as by from you your i we "
    "he she they not no but if so do does did have has had"
)
STOP = frozenset(_STOP_WORDS.split())
CANVAS = (512, 384)


@dataclass
class Rendered:
    name: str
    phrase: str
    face: str
    size: int
    angle: int
    contrast: str


def phrases(count: int, rng: random.Random) -> list[str]:
    if not FORTUNES.is_file():
        raise SystemExit(f"{FORTUNES} is missing: apt install fortunes")
    entries = [e.strip() for e in FORTUNES.read_text(errors="replace").split("\n%\n")]
    fitting = sorted(
        {
            e
            for e in entries
            if "\n" not in e and 4 <= len(e.split()) <= 8 and re.fullmatch(r"[A-Za-z' ,.!?-]+", e) and len(e) <= 48
        }
    )
    if len(fitting) < count:
        raise SystemExit(f"only {len(fitting)} short fortunes found")
    return rng.sample(fitting, count)


def photos(count: int, rng: random.Random) -> list[Image.Image]:
    """Real photos at the canvas size: scikit-image samples, then Tux Paint stamps on a plain ground."""
    from skimage import data

    found: list[Image.Image] = []
    for name in SAMPLES:
        try:
            pixels = getattr(data, name)()
        except Exception:  # a sample that would need a download
            continue
        found.append(_fit(Image.fromarray(np.asarray(pixels)).convert("RGB")))
    stamps = sorted(STAMPS.rglob("*.png")) if STAMPS.is_dir() else []
    for path in rng.sample(stamps, min(len(stamps), max(0, count - len(found)))):
        stamp = Image.open(path).convert("RGBA")
        stamp.thumbnail((CANVAS[0] - 40, CANVAS[1] - 40))
        ground = Image.new("RGB", CANVAS, tuple(rng.randrange(150, 256) for _ in range(3)))
        ground.paste(stamp, ((CANVAS[0] - stamp.width) // 2, (CANVAS[1] - stamp.height) // 2), stamp)
        found.append(ground)
    if len(found) < count:
        raise SystemExit(f"only {len(found)} photos: apt install tuxpaint-stamps-default")
    return found[:count]


def _fit(image: Image.Image) -> Image.Image:
    scale = max(CANVAS[0] / image.width, CANVAS[1] / image.height)
    image = image.resize((round(image.width * scale), round(image.height * scale)))
    left, top = (image.width - CANVAS[0]) // 2, (image.height - CANVAS[1]) // 2
    return image.crop((left, top, left + CANVAS[0], top + CANVAS[1]))


def _wrap(phrase: str, width: int) -> list[str]:
    lines: list[str] = []
    for word in phrase.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def render(photo: Image.Image, phrase: str, face: str, size: int, angle: int, contrast: str, rng: random.Random):
    font = ImageFont.truetype(str(FONTS / face), size)
    lines = _wrap(phrase, 18 if angle != 90 else 26)
    width = max(int(font.getlength(line)) for line in lines) + size
    height = len(lines) * int(size * 1.3) + size // 2
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    if contrast == "plate":
        draw.rounded_rectangle((0, 0, width - 1, height - 1), radius=size // 3, fill=(245, 245, 235, 235))
    layer = layer.rotate(angle, expand=True) if angle else layer
    target = photo.copy()
    max_x, max_y = max(1, CANVAS[0] - layer.width), max(1, CANVAS[1] - layer.height)
    x, y = rng.randrange(max_x), rng.randrange(max_y)
    mean = ImageStat.Stat(target.crop((x, y, x + layer.width, y + layer.height)).convert("L")).mean[0]
    if contrast == "plate":
        ink = (20, 20, 20)
    elif contrast == "plain":
        ink = (0, 0, 0) if mean > 128 else (255, 255, 255)
    else:
        grey = int(mean + 70 if mean < 128 else mean - 70)
        ink = (grey, grey, grey)
    text = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    pen = ImageDraw.Draw(text)
    for number, line in enumerate(lines):
        pen.text((size // 2, size // 4 + number * int(size * 1.3)), line, fill=(*ink, 255), font=font)
    text = text.rotate(angle, expand=True) if angle else text
    target.paste(layer, (x, y), layer)
    target.paste(text, (x, y), text)
    return target


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def cer(found: str | None, truth: str) -> float:
    truth = normalise(truth)
    return jellyfish.levenshtein_distance(normalise(found or ""), truth) / max(1, len(truth))


def paraphrases() -> dict[str, str]:
    """The human-written paraphrase of each fortune that has one."""
    rows = (line.split("\t") for line in PARAPHRASES.read_text().splitlines() if line and not line.startswith("#"))
    return {phrase: paraphrase for phrase, paraphrase in rows}


def queries(phrase: str, paraphrase: str | None) -> dict[str, str]:
    words = normalise(phrase).split()
    content = [w for w in words if w not in STOP] or words
    middle = max(0, (len(words) - 3) // 2)
    kinds = {"exact": phrase, "reworded": " ".join(reversed(content))}
    if paraphrase:
        kinds["paraphrase"] = paraphrase
    kinds["partial"] = " ".join(words[middle : middle + 3])
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phrases", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timing-images", type=int, default=12, help="images per group timed for images/s")
    args = parser.parse_args()
    if not ocr_supported():
        raise SystemExit("pip install 'xmodal[ocr]'")
    rng = random.Random(args.seed)
    texts = phrases(args.phrases, rng)
    backgrounds = photos(args.phrases * 2, rng)
    with tempfile.TemporaryDirectory() as scratch:
        corpus = Path(scratch) / "corpus"
        corpus.mkdir()
        rendered: list[Rendered] = []
        images_with: list[Image.Image] = []
        for number, phrase in enumerate(texts):
            # every angle meets every contrast equally often; sizes and faces rotate across both
            angle, contrast = ANGLES[number % len(ANGLES)], CONTRASTS[(number // len(ANGLES)) % len(CONTRASTS)]
            size, face = SIZES[(number + number // 12) % len(SIZES)], FACES[(number // 2) % len(FACES)]
            image = render(backgrounds[number], phrase, face, size, angle, contrast, rng)
            name = f"sign_{number:03d}.png"
            image.save(corpus / name)
            images_with.append(image)
            rendered.append(Rendered(name, phrase, face, size, angle, contrast))
        images_without = backgrounds[args.phrases :] + backgrounds[: args.phrases]
        for number, image in enumerate(images_without):
            image.save(corpus / f"photo_{number:03d}.png")

        settings = Settings(home=Path(scratch) / "home", speech_model="", decode_workers=2)
        with Engine.open(settings=settings) as engine:
            started = time.perf_counter()
            report = engine.index([corpus])
            index_s = time.perf_counter() - started
            states = engine.catalog.file_states()
            items = engine.catalog.get_items([state.item_id for state in states.values()])
            by_name = {Path(item.path).name: item for item in items.values()}

            cers, cleaned = [], []
            by_condition: dict[str, list[float]] = defaultdict(list)
            for sample in rendered:
                item = by_name[sample.name]
                raw = cer(item.ocr_text, sample.phrase)
                cers.append(raw)
                cleaned.append(
                    jellyfish.levenshtein_distance(clean(item.ocr_text or ""), clean(sample.phrase))
                    / max(1, len(clean(sample.phrase)))
                )
                for key in (f"size {sample.size}", f"angle {sample.angle}", f"contrast {sample.contrast}"):
                    by_condition[key].append(raw)
            false_text = sum(1 for n, item in by_name.items() if n.startswith("photo_") and item.ocr_text)

            ranks: dict[str, list[int | None]] = defaultdict(list)
            spaces: set[str] = set()
            reworded = paraphrases()
            for sample in rendered:
                for kind, text in queries(sample.phrase, reworded.get(sample.phrase)).items():
                    response = engine.query(engine.build_query(text=text, k=10, modalities=["image"]))
                    spaces.update(response.spaces_searched)
                    names = [Path(r.path).name for r in response.results]
                    ranks[kind].append(names.index(sample.name) + 1 if sample.name in names else None)

        reader = TextReader()
        reader.load()
        speed = {}
        for group, images in (("with text", images_with), ("without text", images_without)):
            chosen = images[: args.timing_images]
            started = time.perf_counter()
            for image in chosen:
                reader.read(image)
            speed[group] = len(chosen) / (time.perf_counter() - started)

    recall = {kind: {f"R@{k}": recall_at(values, k) for k in (1, 5, 10)} for kind, values in ranks.items()}
    print(f"\n{len(rendered)} photos with a phrase, {len(images_without)} without; indexed in {index_s:.0f} s")
    print(f"spaces answering: {', '.join(sorted(spaces))}")
    print(f"\n{'CER':<22}{'mean':>8}{'median':>8}")
    print(f"{'raw OCR text':<22}{np.mean(cers):>8.3f}{np.median(cers):>8.3f}")
    print(f"{'after word clean-up':<22}{np.mean(cleaned):>8.3f}{np.median(cleaned):>8.3f}")
    for key in sorted(by_condition):
        print(f"  {key:<20}{np.mean(by_condition[key]):>8.3f}{np.median(by_condition[key]):>8.3f}")
    print(f"photos without text given text: {false_text} of {len(images_without)}")
    print(f"\n{'query':<12}{'R@1':>7}{'R@5':>7}{'R@10':>7}")
    for kind, values in recall.items():
        print(f"{kind:<12}{values['R@1']:>7.2f}{values['R@5']:>7.2f}{values['R@10']:>7.2f}")
    print(f"\nOCR images/s ({reader.provider}): " + ", ".join(f"{k} {v:.2f}" for k, v in speed.items()))
    path = write_result(
        "ocr_quality",
        {
            "phrases": len(rendered),
            "distractors": len(images_without),
            "spaces": sorted(spaces),
            "index_seconds": index_s,
            "index_report": {k: report.to_dict()[k] for k in ("indexed", "ocr_read", "ocr_with_text", "failed")},
            "cer": {"raw_mean": float(np.mean(cers)), "clean_mean": float(np.mean(cleaned))},
            "cer_by_condition": {k: float(np.mean(v)) for k, v in sorted(by_condition.items())},
            "photos_without_text_given_text": false_text,
            "text_read_on_photos_without_text": {
                n: item.ocr_text for n, item in sorted(by_name.items()) if n.startswith("photo_") and item.ocr_text
            },
            "recall": recall,
            "images_per_second": speed,
            "provider": reader.provider,
            "samples": [
                {**sample.__dict__, "ocr": by_name[sample.name].ocr_text, "cer": c}
                for sample, c in zip(rendered, cers, strict=True)
            ],
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
