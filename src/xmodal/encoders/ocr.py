"""Reading the words in an image: PP-OCRv4 text detection, direction and recognition on onnxruntime.

The models ship inside the ``rapidocr-onnxruntime`` wheel (the ``ocr`` extra), so nothing is downloaded. The
reader loads lazily under a lock, runs on CUDA when onnxruntime has the provider (``onnxruntime-gpu``) and the
device setting allows it, and keeps to per-image limits: pixels (the image is scaled down first), lines (the
largest detections are kept), and seconds (no further lines are recognised once the budget is spent). An image
without text costs only the detector.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from xmodal.config import DevicePreference

log = logging.getLogger(__name__)
ENGINE = "rapidocr-onnxruntime/PP-OCRv4"  # recorded per item: which reader produced its text
MISSING = "OCR is not installed, images are not read for text: pip install 'xmodal[ocr]'"
_BATCH = 6  # crops per direction/recognition call (the models' own batch size)
# A line needs this many letters or digits: lone characters are mostly what the recogniser makes of textures
# (11 of 48 photos without words got one, and nothing longer, in benchmarks/ocr_quality.py).
_MIN_CHARS = 2


def ocr_supported() -> bool:
    """True when the ``ocr`` extra (rapidocr-onnxruntime) is installed."""
    return importlib.util.find_spec("rapidocr_onnxruntime") is not None


@dataclass(frozen=True, slots=True)
class OcrLimits:
    max_pixels: int = 4_000_000
    max_seconds: float = 20.0
    max_boxes: int = 200
    min_confidence: float = 0.5


@dataclass(frozen=True, slots=True)
class OcrLine:
    """One recognised line: its text, its polygon (corners clockwise from the top left, as fractions of the
    image's width and height, EXIF orientation applied), the recogniser's confidence, its place in reading order,
    and where it lies in the item's OCR text."""

    text: str
    polygon: tuple[tuple[float, float], ...]
    confidence: float
    order: int
    start: int
    end: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "polygon": [list(point) for point in self.polygon],
            "confidence": self.confidence,
            "order": self.order,
            "start": self.start,
            "end": self.end,
        }


@dataclass(frozen=True, slots=True)
class OcrResult:
    """What OCR found in one image: the lines in reading order, joined by newlines into ``text``."""

    lines: tuple[OcrLine, ...] = ()
    truncated: bool = False  # a limit stopped it before every detected line was read

    @property
    def text(self) -> str | None:
        return "\n".join(line.text for line in self.lines) or None

    @classmethod
    def of(
        cls, found: list[tuple[str, np.ndarray, float]], size: tuple[int, int], truncated: bool = False
    ) -> OcrResult:
        """From (text, polygon in pixels of an image of ``size``, confidence) in reading order; offsets count the
        newline between lines."""
        lines, offset = [], 0
        width, height = max(1, size[0]), max(1, size[1])
        for order, (text, polygon, confidence) in enumerate(found):
            points = tuple((round(float(x) / width, 5), round(float(y) / height, 5)) for x, y in polygon)
            lines.append(OcrLine(text, points, round(float(confidence), 4), order, offset, offset + len(text)))
            offset += len(text) + 1
        return cls(tuple(lines), truncated)


class TextReader:
    """PP-OCR behind a lazy, locked load. ``read`` is safe to call from the decode threads."""

    def __init__(self, limits: OcrLimits | None = None, device: DevicePreference = DevicePreference.AUTO) -> None:
        self.limits = limits or OcrLimits()
        self.device = device
        self._engine: Any = None
        self._lock = threading.Lock()
        self.provider: str | None = None

    def load(self) -> None:
        """Load the models (once); raises ``ImportError`` without the ``ocr`` extra."""
        with self._lock:
            if self._engine is not None:
                return
            import onnxruntime
            from rapidocr_onnxruntime import RapidOCR

            cuda = self.device is not DevicePreference.CPU and (
                "CUDAExecutionProvider" in onnxruntime.get_available_providers()
            )
            self._engine = RapidOCR(
                det_use_cuda=cuda,
                cls_use_cuda=cuda,
                rec_use_cuda=cuda,
                det_limit_type="max",  # scale the longest side down to 960, never small images up
                det_limit_side_len=960,
                text_score=self.limits.min_confidence,
            )
            self.provider = "cuda" if cuda else "cpu"
            log.info("OCR loaded (%s, %s)", ENGINE, self.provider)

    def read(self, image: Image.Image) -> OcrResult:
        """The lines of text in ``image``, in reading order."""
        self.load()
        deadline = time.perf_counter() + self.limits.max_seconds
        size = image.size
        scale = min(1.0, math.sqrt(self.limits.max_pixels / max(1, image.width * image.height)))
        if scale < 1.0:
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
        engine = self._engine
        pixels = np.asarray(image.convert("RGB"))[:, :, ::-1].copy()  # the models take BGR, as OpenCV reads
        raw_h, raw_w = pixels.shape[:2]
        with self._lock:
            resized, ratio_h, ratio_w = engine.preprocess(pixels)
            record: dict[str, Any] = {"preprocess": {"ratio_h": ratio_h, "ratio_w": ratio_w}}
            resized, record = engine.maybe_add_letterbox(resized, record)
            boxes, _ = engine.auto_text_det(resized)
            if boxes is None:
                return OcrResult()
            truncated = len(boxes) > self.limits.max_boxes
            if truncated:  # keep the largest lines, still in reading order
                areas = [cv_area(box) for box in boxes]
                keep = sorted(sorted(range(len(boxes)), key=lambda i: -areas[i])[: self.limits.max_boxes])
                boxes = [boxes[i] for i in keep]
            crops = engine.get_crop_img_list(resized, boxes)
            recognised: list[tuple[str, float]] = []
            for start in range(0, len(crops), _BATCH):
                if start and time.perf_counter() > deadline:
                    truncated = True
                    break
                upright, _, _ = engine.text_cls(crops[start : start + _BATCH])
                lines, _ = engine.text_rec(upright)
                recognised.extend((str(text), float(score)) for text, score, *_ in lines)
            polygons = engine._get_origin_points(boxes[: len(recognised)], record, raw_h, raw_w) / scale
        found = [
            (" ".join(text.split()), polygon, score)
            for (text, score), polygon in zip(recognised, polygons, strict=True)
            if score >= self.limits.min_confidence and sum(c.isalnum() for c in text) >= _MIN_CHARS
        ]
        return OcrResult.of(found, size, truncated)


def cv_area(box: np.ndarray) -> float:
    """The area of a quadrilateral (shoelace formula)."""
    x, y = box[:, 0], box[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)
