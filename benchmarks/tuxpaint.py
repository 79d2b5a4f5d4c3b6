"""The Tux Paint stamps (Debian tuxpaint-stamps-default) as a retrieval benchmark: written captions as queries,
the English spoken readings (``*_desc.ogg``) as the items to find, the stamps' sound effects as distractors."""

from __future__ import annotations

import os
from pathlib import Path

from xmodal.indexer.decode import caption_from_sidecar

DEFAULT_STAMPS = Path("/usr/share/tuxpaint/stamps")


def readings(stamps: Path) -> list[tuple[Path, str]]:
    """(spoken reading, written caption) for every English reading whose stamp has a caption."""
    pairs = []
    for reading in sorted(stamps.rglob("*_desc.ogg")):
        sidecar = reading.with_name(reading.name.removesuffix("_desc.ogg") + ".txt")
        caption = caption_from_sidecar(sidecar.read_bytes(), 500) if sidecar.is_file() else None
        if caption:
            pairs.append((reading, caption))
    return pairs


def link_corpus(stamps: Path, corpus: Path) -> tuple[dict[str, str], int]:
    """Link the readings and effects into ``corpus`` under neutral names (no caption files beside them, and no
    stamp name in the file name, so only the speech itself can be found); returns (link name of each reading ->
    its caption, number of effects)."""
    pairs = readings(stamps)
    effects = [r.with_name(r.name.replace("_desc.ogg", ".ogg")) for r, _ in pairs]
    effects = [e for e in effects if e.is_file()]
    corpus.mkdir(parents=True, exist_ok=True)
    for number, path in enumerate([r for r, _ in pairs] + effects):
        os.symlink(path, corpus / f"clip{number:04d}.ogg")
    return {f"clip{number:04d}.ogg": caption for number, (_, caption) in enumerate(pairs)}, len(effects)
