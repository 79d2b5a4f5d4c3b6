"""Real semantics through the offline `text` space: paraphrases find the right documents."""

from __future__ import annotations

from pathlib import Path

import pytest

from xmodal.engine import Engine

DOCUMENTS = {
    "bake.txt": "Preheat the oven, mix flour, eggs and sugar, and bake the cake for forty minutes.",
    "flat-tyre.txt": "To repair a punctured bicycle tube, find the hole, patch it and pump the tyre up again.",
    "vaccine.txt": "The clinic offers flu vaccinations to adults over sixty-five every autumn.",
    "football.txt": "The home team scored twice in the second half and won the league final.",
    "rent.txt": "The tenant must pay the monthly rent before the fifth day of each month.",
    "volcano.txt": "Lava poured down the slopes after the mountain erupted, and nearby villages were evacuated.",
    "python.txt": "Install the package with pip, then import it and call the main function from your script.",
    "whale.txt": "Humpback whales migrate thousands of kilometres to breed in warm tropical waters.",
}
PARAPHRASES = {
    "how do I fix a puncture on my bike": "flat-tyre.txt",
    "recipe for a sponge dessert": "bake.txt",
    "getting a flu shot when you are elderly": "vaccine.txt",
    "soccer championship match result": "football.txt",
    "when is the payment for my apartment due": "rent.txt",
    "eruption forced people to leave their homes": "volcano.txt",
    "setting up a library in my code": "python.txt",
    "large marine mammals travelling long distances": "whale.txt",
}


@pytest.fixture
def documents(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    for name, text in DOCUMENTS.items():
        (root / name).write_text(text)
    return root


def test_paraphrases_find_the_right_document(engine: Engine, documents: Path) -> None:
    engine.index([documents])
    for query, expected in PARAPHRASES.items():
        top = engine.search(query, k=1, space="text")
        assert Path(top[0].path).name == expected, query
