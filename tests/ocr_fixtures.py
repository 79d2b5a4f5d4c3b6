"""Images with words on them, and one OCR reader shared by the tests that read them."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


def sign(lines: list[str], *, size: int = 30, angle: float = 0.0, ground: str = "#1a5fb4") -> Image.Image:
    """White words on a coloured board, like a street sign, optionally turned by ``angle`` degrees."""
    font = ImageFont.truetype(str(FONT), size)
    width = max(int(font.getlength(line)) for line in lines) + 2 * size
    image = Image.new("RGB", (width, (len(lines) + 1) * int(size * 1.5)), ground)
    draw = ImageDraw.Draw(image)
    for number, line in enumerate(lines):
        draw.text((size, int(size * 0.75) + number * int(size * 1.5)), line, fill="white", font=font)
    return image.rotate(angle, expand=True, fillcolor=ground) if angle else image


def photo() -> Image.Image:
    """A real photograph without words (scikit-image's coffee cup), small."""
    from skimage import data

    return Image.fromarray(data.coffee()).resize((300, 200))
