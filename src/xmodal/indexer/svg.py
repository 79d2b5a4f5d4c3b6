"""SVG images: rendered to pixels (with cairosvg, the ``svg`` extra) so they are indexed like any other image.

Rendering is bounded by size: the SVG's bytes by ``XMODAL_MAX_FILE_BYTES`` and the raster by ``max_side`` pixels
on the longest side (the encoders see 224-336 pixels). It is bounded in time too: a small file can still ask for
an endless drawing (``<use>`` elements that each repeat a group of ``<use>`` elements, ...), so each SVG is drawn
in a child process that is killed after ``timeout_s`` seconds (``XMODAL_SVG_TIMEOUT_S``), and the file fails with
that reason. The child is a fork of this process with cairosvg imported, so a drawing costs a fork, not an
interpreter start, and the script that runs the indexer is not imported again (as spawn and forkserver children
would do). This process itself never draws, so no thread of it holds cairo's locks when it forks. External
resources (linked images, entities) are never fetched: cairosvg runs in its safe mode.
"""

from __future__ import annotations

import importlib.util
import io
import multiprocessing
import re
from multiprocessing.connection import Connection

from PIL import Image

from xmodal.errors import DecodeError

MEDIA_TYPE = "image/svg+xml"
# A doctype may carry an internal subset in brackets (Adobe Illustrator writes entity declarations there, whose
# own '>' must not end the doctype: Tux Paint's bee.svg and loaf_of_bread.svg).
_SVG_START = re.compile(
    rb"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*|<!DOCTYPE(?:[^>\[]|\[.*?\])*>\s*)*<svg[\s>]", re.DOTALL
)


def svg_supported() -> bool:
    """Whether the svg extra (cairosvg) is installed."""
    return importlib.util.find_spec("cairosvg") is not None


def looks_like_svg(data: bytes) -> bool:
    """True when the bytes start (after an XML declaration, comments and a doctype) with an ``<svg`` element."""
    return _SVG_START.match(data[:4096].lstrip(b"\xef\xbb\xbf")) is not None


_INTERNAL_SUBSET = re.compile(rb"(<!DOCTYPE[^>\[]*)\[(.*?)\](\s*>)", re.DOTALL)
_LITERAL_ENTITY = re.compile(rb"""<!ENTITY\s+([A-Za-z_][\w.-]*)\s+(?:"([^"&<%]*)"|'([^'&<%]*)')\s*>""")
_DECLARATION_OR_COMMENT = re.compile(rb"<!ENTITY\b[^>]*>|<!--.*?-->|\s+", re.DOTALL)


def inline_literal_entities(data: bytes, *, max_growth: int = 4) -> bytes:
    """The SVG with the entities of its doctype's internal subset written out, when each is a plain literal (no
    ``&``, ``<`` or parameter entity in its value, so nothing expands into more entities) and the document grows
    at most ``max_growth`` times: Adobe Illustrator declares its namespaces so (``<!ENTITY ns_svg "http://...">``),
    and the renderer refuses every entity, as it must for untrusted files. Anything else is returned unchanged
    (and refused by the renderer)."""
    found = _INTERNAL_SUBSET.search(data[:65536])
    if found is None:
        return data
    entities: dict[bytes, bytes] = {}
    for match in _LITERAL_ENTITY.finditer(found.group(2)):
        entities[match.group(1)] = match.group(2) if match.group(2) is not None else match.group(3)
    if _LITERAL_ENTITY.sub(b"", _DECLARATION_OR_COMMENT.sub(b"", found.group(2))).strip() or not entities:
        return data  # something other than literal entity declarations: not ours to interpret
    body = data[: found.start()] + found.group(1).rstrip() + found.group(3) + data[found.end() :]
    pattern = re.compile(rb"&(" + b"|".join(re.escape(name) for name in entities) + rb");")
    expanded = pattern.sub(lambda match: entities[match.group(1)], body)
    return expanded if len(expanded) <= max_growth * len(data) else data


def render_svg(data: bytes, *, max_side: int, timeout_s: float = 10.0) -> Image.Image:
    """The SVG drawn on white as RGB, its longest side ``max_side`` pixels, by a child process given at most
    ``timeout_s`` seconds; ``DecodeError`` (with the reason) if it cannot be drawn in that time."""
    import cairosvg  # noqa: F401 (imported here once, so that every child has it already)

    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    data = inline_literal_entities(data)
    child = context.Process(target=_render_into, args=(sender, data, max_side), name="xmodal-svg", daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(timeout_s):
            raise DecodeError(f"SVG took longer than {timeout_s:g} s to render (XMODAL_SVG_TIMEOUT_S); it was stopped")
        outcome, payload = receiver.recv()
    except EOFError:  # the child died without a word (killed, out of memory)
        child.join()
        raise DecodeError(f"SVG could not be rendered: the renderer exited with code {child.exitcode}") from None
    finally:
        receiver.close()
        if child.is_alive():
            child.kill()
        child.join()
    if outcome != "ok":
        raise DecodeError(f"SVG could not be rendered: {payload}")
    image = Image.open(io.BytesIO(payload))
    image.load()
    return image.convert("RGB")


def _render_into(sender: Connection, data: bytes, max_side: int) -> None:
    """In the child: draw, and send ``("ok", png)`` or ``("error", reason)``."""
    try:
        sender.send(("ok", _draw_png(data, max_side=max_side)))
    except MemoryError:
        sender.send(("error", "it needs more memory than there is"))
    except Exception as exc:  # cairosvg raises XML parse errors, ValueError and cairo's own errors
        sender.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        sender.close()


def _draw_png(data: bytes, *, max_side: int) -> bytes:
    """PNG bytes of the SVG on white, its longest side ``max_side`` pixels (unbounded in time: a child runs it)."""
    import cairosvg

    intrinsic = Image.open(io.BytesIO(cairosvg.svg2png(bytestring=data, output_width=8, unsafe=False)))
    landscape = intrinsic.width >= intrinsic.height
    size = {"output_width": max_side} if landscape else {"output_height": max_side}
    png = cairosvg.svg2png(bytestring=data, unsafe=False, background_color="white", **size)
    assert isinstance(png, bytes)
    return png
