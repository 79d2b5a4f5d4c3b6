"""JPEG decoding and CLIP pre-processing on the encoder's device (nvJPEG on CUDA, libjpeg-turbo on the CPU).

On a GPU the CPU would otherwise spend most of an indexing run decoding and resizing JPEGs for the encoder.
Here the reader hands the encoder the file's bytes, and a batch is decoded, resized, cropped and normalised
on the device with torchvision, the same steps as open_clip's own transform (shortest side, bicubic with
antialiasing, centre crop, mean/std). A file torchvision cannot decode (CMYK, unusual subsampling) falls back to
Pillow, so no file fails because of this path.

The EXIF orientation is read on the CPU when the bytes are handed over and applied to the decoded tensor here:
torchvision's CUDA decoder ignores ``apply_exif_orientation``, so phone photos would reach the model lying on
their side. Out-of-memory errors are not taken for undecodable files: they go up to the batch sizer.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import ExifTags, Image, ImageOps
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as F

from xmodal.encoders.batching import is_out_of_memory


@dataclass(frozen=True, slots=True)
class EncodedJpeg:
    """A JPEG file's bytes, to be decoded where the encoder runs, and its EXIF orientation (1 = upright)."""

    data: bytes
    orientation: int = 1

    @classmethod
    def from_bytes(cls, data: bytes) -> EncodedJpeg:
        """The bytes with the orientation their EXIF block asks for (read from the header only)."""
        return cls(data, exif_orientation(data))


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1-8) of an image file's bytes; 1 when it has none or it cannot be read."""
    try:
        value = Image.open(io.BytesIO(data)).getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, SyntaxError, ValueError, TypeError):
        return 1  # an unreadable header fails the decode itself, which reports it
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def apply_orientation(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """A CHW tensor turned the way ``ImageOps.exif_transpose`` turns a Pillow image with that orientation tag."""
    height, width = -2, -1
    if orientation == 2:
        return image.flip(width)
    if orientation == 3:
        return image.flip(height, width)
    if orientation == 4:
        return image.flip(height)
    if orientation == 5:
        return image.transpose(height, width)
    if orientation == 6:
        return image.rot90(-1, (height, width))
    if orientation == 7:
        return image.transpose(height, width).flip(height, width)
    if orientation == 8:
        return image.rot90(1, (height, width))
    return image


@dataclass(frozen=True, slots=True)
class ClipPreprocess:
    """open_clip's ``preprocess_cfg`` as tensor operations: the output matches its PIL transform to resampling."""

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ClipPreprocess | None:
        """``None`` when the model's transform is not the standard shortest-side resize and centre crop."""
        if config.get("resize_mode", "shortest") != "shortest" or config.get("interpolation") != "bicubic":
            return None
        size = config["size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        return cls(size, tuple(config["mean"]), tuple(config["std"]))  # type: ignore[arg-type]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 CHW RGB -> normalised float CHW of the model's input size."""
        resized = F.resize(image, [min(self.size)], interpolation=F.InterpolationMode.BICUBIC, antialias=True)
        cropped = F.center_crop(resized, list(self.size))
        scaled = cropped.float().div_(255.0).clamp_(0.0, 1.0)
        return F.normalize(scaled, list(self.mean), list(self.std))


def decode_batch(
    jpegs: Sequence[EncodedJpeg],
    device: torch.device,
    preprocess: ClipPreprocess,
    fallback: Callable[[Image.Image], torch.Tensor],
) -> list[torch.Tensor]:
    """Model inputs (on ``device``) for each JPEG; files torchvision cannot decode go through Pillow and
    ``fallback``, the model's own PIL transform. Out-of-memory errors are raised, for the batch sizer."""
    data = [torch.frombuffer(bytearray(jpeg.data), dtype=torch.uint8) for jpeg in jpegs]
    try:
        images: list[torch.Tensor | None] = list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
    except RuntimeError as exc:  # one bad file fails a batched decode: decode one by one
        if is_out_of_memory(exc):
            raise
        images = [_decode_one(tensor, device) for tensor in data]
    out: list[torch.Tensor] = []
    for jpeg, image in zip(jpegs, images, strict=True):
        if image is None:
            out.append(fallback(_pil_rgb(jpeg.data)).to(device))
        else:
            out.append(preprocess(apply_orientation(image, jpeg.orientation)))
    return out


def _pil_rgb(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    return (ImageOps.exif_transpose(image) or image).convert("RGB")


def _decode_one(data: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError as exc:
        if is_out_of_memory(exc):
            raise
        return None
