"""Late fusion: plain ANN equivalence, determinism, negative parts, lexical evidence, explain, pages, dedup."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_settings, random_text, write_corpus
from xmodal.config import FusionMethod, Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine
from xmodal.errors import ConfigError, InvalidQueryError
from xmodal.search.fusion import Evidence, Fuser, Source
from xmodal.search.query import QueryPart, SearchResult
from xmodal.search.rerank import collapse_duplicates, maximal_marginal_relevance, similarity_matrix

SHOP = {
    "dress-long.txt": "A red dress with long sleeves and a high collar.",
    "dress-short.txt": "A red dress with short sleeves, light summer cotton.",
    "dress-blue.txt": "A blue dress with short sleeves for the evening.",
    "shirt.txt": "A white cotton shirt with long sleeves.",
    "boots.txt": "Brown leather boots with thick soles.",
    "scarf.txt": "A warm red wool scarf.",
    "dress-wool.txt": "A red wool dress, warm and thick for cold winter days.",
    "dress-silk.txt": "A red silk dress, light and airy for summer.",
    "catalogue.txt": "Spring catalogue entry XQ-7731-B: a linen jacket.",
}


@pytest.fixture(scope="module")
def fused_engine(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_clip_dir: Path,
    tiny_clap_dir: Path,
    encoder_pool: Callable[[str, Settings], Encoder],
) -> Iterator[Engine]:
    root = write_corpus(tmp_path_factory.mktemp("corpus"), images=40, texts=40)
    for name, text in SHOP.items():
        (root / name).write_text(text)
    settings = make_settings(tmp_path_factory.mktemp("home"), tiny_clip_dir, tiny_clap_dir)
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        engine.index([root])
        yield engine


def _plain_ann(engine: Engine, space: str, vector: np.ndarray, k: int) -> list[int]:
    index = engine.spaces[space].stored_index()
    scores, ids = index.search(vector, index.ntotal)
    owners = engine.catalog.resolve_vectors(ids[0].tolist())
    best: dict[int, float] = {}
    for score, vector_id in zip(scores[0].tolist(), ids[0].tolist(), strict=True):
        owner = owners[vector_id].item_id
        best[owner] = max(best.get(owner, -np.inf), score)
    return [i for i, _ in sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


@pytest.mark.parametrize("space", ["clip", "text"])
def test_one_space_one_part_no_rerank_equals_plain_ann(fused_engine: Engine, space: str) -> None:
    rng = random.Random(space)
    encoder = fused_engine.spaces[space].encoder
    for _ in range(20):
        text = random_text(rng, rng.randrange(1, 6))
        expected = _plain_ann(fused_engine, space, encoder.encode_texts([text])[0], 10)
        results = fused_engine.search(text, k=10, space=space, collapse_duplicates=False, diversity=0.0)
        assert [r.item_id for r in results] == expected


def test_the_same_query_twice_gives_the_same_list(fused_engine: Engine) -> None:
    first = fused_engine.search("red dress", k=20, explain=True)
    second = fused_engine.search("red dress", k=20, explain=True)
    assert [(r.item_id, r.score) for r in first] == [(r.item_id, r.score) for r in second]


def test_a_negative_part_lowers_what_matches_it(fused_engine: Engine) -> None:
    def names(results: list) -> list[str]:  # type: ignore[type-arg]
        return [Path(r.path).name for r in results]

    plain = names(fused_engine.search("red dress", k=50, space="text"))
    steered = fused_engine.search(
        "red dress", parts=[QueryPart.text("warm wool", weight=-1.0)], k=50, space="text", explain=True
    )
    assert plain.index("dress-wool.txt") < plain.index("dress-silk.txt")
    assert names(steered).index("dress-wool.txt") > names(steered).index("dress-silk.txt")
    # Items unlike the negative part are not lifted by it: its contribution is never positive.
    assert all(c.contribution <= 0 for r in steered for c in r.explanation if c.weight < 0)


def test_lexical_finds_exact_codes_embeddings_miss(fused_engine: Engine) -> None:
    lexical = fused_engine.search("XQ-7731-B", k=1, space="lexical")
    assert Path(lexical[0].path).name == "catalogue.txt"
    fused = fused_engine.query(fused_engine.build_query(text="XQ-7731-B", k=3, explain=True))
    assert "lexical" in fused.spaces_searched
    assert Path(fused.results[0].path).name == "catalogue.txt"
    assert any(c.space == "lexical" for c in fused.results[0].explanation)


def test_explanation_adds_up_to_the_score(fused_engine: Engine) -> None:
    for result in fused_engine.search("red wool", k=5, explain=True):
        assert result.explanation
        assert sum(c.contribution for c in result.explanation) == pytest.approx(result.score)
        for c in result.explanation:  # a source above chance gives at most its weighted score (the norm shares it)
            assert c.contribution <= c.weight * c.calibrated + 1e-9 if c.calibrated > 0 else True


def test_pages_continue_without_overlap(fused_engine: Engine) -> None:
    whole = fused_engine.search("river night", k=12)
    first = fused_engine.query(fused_engine.build_query(text="river night", k=6))
    assert first.next_cursor
    second = fused_engine.query(fused_engine.build_query(text="river night", k=6, cursor=first.next_cursor))
    assert [r.item_id for r in first.results + second.results] == [r.item_id for r in whole]
    with pytest.raises(InvalidQueryError, match="cursor"):
        fused_engine.build_query(text="river", cursor="not-a-cursor")


def test_min_score_cuts_the_tail(fused_engine: Engine) -> None:
    results = fused_engine.search("red dress", k=50)
    cutoff = results[4].score
    kept = fused_engine.search("red dress", k=50, min_score=cutoff)
    assert [r.item_id for r in kept] == [r.item_id for r in results if r.score >= cutoff]


def test_rrf_fusion_is_an_option(fused_engine: Engine) -> None:
    results = fused_engine.search("red dress", k=5, fusion="rrf", explain=True)
    assert len(results) == 5
    assert all(0 < c.contribution <= 1 / 61 + 1e-9 for r in results for c in r.explanation)
    with pytest.raises(ConfigError):
        Fuser(FusionMethod.RRF, rrf_k=0)


def test_more_like_this_leaves_the_item_out(fused_engine: Engine) -> None:
    anchor = fused_engine.search("red dress short sleeves", k=1, space="text")[0]
    similar = fused_engine.search(parts=[QueryPart.item(anchor.item_id)], k=5, space="text")
    assert anchor.item_id not in [r.item_id for r in similar]
    assert Path(similar[0].path).name in {"dress-long.txt", "dress-blue.txt"}


def test_raw_vector_part(fused_engine: Engine) -> None:
    encoder = fused_engine.spaces["text"].encoder
    vector = encoder.encode_texts(["brown leather boots"])[0]
    results = fused_engine.search(parts=[QueryPart.vector("text", vector.tolist())], k=1)
    assert Path(results[0].path).name == "boots.txt"
    with pytest.raises(InvalidQueryError, match="384"):
        fused_engine.search(parts=[QueryPart.vector("text", [0.5, 0.5])], k=1)


def test_only_negative_parts_is_refused(fused_engine: Engine) -> None:
    with pytest.raises(InvalidQueryError, match="positive weight"):
        fused_engine.search(parts=[QueryPart.text("boots", weight=-1)])


def test_exact_duplicates_fold_into_one_result(engine: Engine, tmp_path: Path) -> None:
    root = write_corpus(tmp_path / "corpus", images=6, texts=0)
    shutil.copy(root / "image_002.png", root / "copy_of_image_002.png")
    engine.index([root])
    results = engine.search(image=root / "image_002.png", k=10, space="clip", collapse_duplicates=True)
    paths = [Path(r.path).name for r in results]
    assert ("image_002.png" in paths) != ("copy_of_image_002.png" in paths)  # exactly one of the pair is shown
    shown = results[paths.index("image_002.png" if "image_002.png" in paths else "copy_of_image_002.png")]
    assert len(shown.duplicates) >= 1


def test_folding_looks_further_while_the_page_is_not_full_and_pages_stay_whole(engine: Engine, tmp_path: Path) -> None:
    """Folding reads the best-ranked candidates first (twice the page) and more while copies leave the page short:
    five copies of one image at the top of every page of one still give a full page, the copies' count, and pages
    that together show every distinct image once."""
    root = write_corpus(tmp_path / "corpus", images=6, texts=0)
    for number in range(4):
        shutil.copy(root / "image_002.png", root / f"copy_{number}_of_image_002.png")
    engine.index([root])

    def page(cursor: str | None) -> tuple[list[SearchResult], str | None]:
        query = engine.build_query(
            image=root / "image_002.png", k=1, space="clip", collapse_duplicates=True, cursor=cursor
        )
        response = engine.query(query)
        return response.results, response.next_cursor

    first, cursor = page(None)
    assert len(first) == 1 and len(first[0].duplicates) == 4
    assert Path(first[0].path).name.endswith("image_002.png")
    shown = [first[0].path]
    while cursor is not None:
        results, cursor = page(cursor)
        shown += [r.path for r in results]
    names = sorted(Path(p).name for p in shown)
    assert len(names) == 6 and sum("image_002" in name for name in names) == 1


def test_maximal_marginal_relevance_spreads_near_copies() -> None:
    basis = np.eye(3, dtype=np.float32)
    vectors = {1: {"s": basis[0]}, 2: {"s": basis[0]}, 3: {"s": basis[1]}, 4: {"s": basis[2]}}
    scores = {1: 1.0, 2: 0.99, 3: 0.5, 4: 0.4}
    similarity = similarity_matrix([1, 2, 3, 4], vectors)
    plain = maximal_marginal_relevance([1, 2, 3, 4], scores=scores, similarity=similarity, diversity=0.0, count=4)
    diverse = maximal_marginal_relevance([1, 2, 3, 4], scores=scores, similarity=similarity, diversity=0.6, count=4)
    assert plain == [1, 2, 3, 4]
    assert diverse[:2] == [1, 3] and sorted(diverse) == [1, 2, 3, 4]


def test_items_are_as_alike_as_their_least_convinced_shared_space() -> None:
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    vectors = {1: {"x": a, "y": a}, 2: {"x": a, "y": b}, 3: {"z": a}}
    similarity = similarity_matrix([1, 2, 3], vectors)
    assert similarity[0, 1] == pytest.approx(0.0)  # alike in x, unalike in y
    assert similarity[0, 2] == 0.0  # no shared space
    kept, folded = collapse_duplicates([1, 2, 3], similarity=similarity, hashes={3: "h", 2: "h"}, threshold=0.9)
    assert kept == [1, 2] and folded == {1: [], 2: [3]}


def test_in_a_space_where_every_pair_is_alike_only_near_identical_items_fold() -> None:
    """A random-weight or degenerate model puts any two items at cosine 0.99: that says nothing, so similarity is
    read against the space's typical pair (Tux Paint's stamps with a random CLIP folded about 60 distinct images
    into others per query, and the right one fell out of the first ten)."""
    rng = np.random.default_rng(0)
    common = rng.normal(size=16)
    items = [common + 0.08 * rng.normal(size=16) for _ in range(4)]  # pairwise cosines about 0.99
    items.append(items[0] + 0.0005 * rng.normal(size=16))  # a near-identical copy of the first
    unit = [v / np.linalg.norm(v) for v in items]
    vectors = {i: {"clip": v} for i, v in enumerate(unit)}
    order = list(range(5))
    raw = similarity_matrix(order, vectors)
    assert raw[0, 1] > 0.98  # by plain cosine every pair would fold
    typical = float(np.mean([raw[i, j] for i in range(4) for j in range(4) if i != j]))
    read = similarity_matrix(order, vectors, {"clip": typical})
    kept, folded = collapse_duplicates(order, similarity=read, hashes={}, threshold=0.98)
    assert kept == [0, 1, 2, 3] and folded[0] == [4]
    assert np.allclose(similarity_matrix(order, vectors, {"clip": 0.0}), raw)  # orthogonal random pairs: as before


def test_calibrated_fusion_combines_each_source_once() -> None:
    a, b = Source("clip", 0, "text#0", 1.0), Source("text", 0, "text#0", 1.0)
    negative = Source("text", 1, "text#1", -0.5)
    evidence = {
        7: Evidence(7, raw={a: 0.3, b: 0.6, negative: 0.9}, calibrated={a: 1.0, b: 2.0, negative: 4.0}),
        8: Evidence(8, raw={b: 0.7}, calibrated={b: 2.5}),
    }
    fused = Fuser().fuse(evidence)
    assert fused[7][0] == pytest.approx(5.0**0.5 - 2.0)  # the spaces of one part combine as a norm: |(1, 2)|
    assert fused[8][0] == pytest.approx(2.5)
    strong = {1: Evidence(1, calibrated={a: 6.0}), 2: Evidence(2, calibrated={a: 2.0, b: 2.0})}
    assert Fuser().fuse(strong)[1][0] > Fuser().fuse(strong)[2][0]  # one strong source beats two weak ones
    unlike = {9: Evidence(9, raw={b: 0.7, negative: 0.1}, calibrated={b: 2.5, negative: -3.0})}
    assert Fuser().fuse(unlike)[9][0] == pytest.approx(2.5)  # not lifted for being unlike the negative part


def test_lexical_matches_words_that_sound_alike(engine: Engine, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "heard.txt").write_text("Dear.")  # what a speech recogniser wrote for "deer"
    (docs / "other.txt").write_text("A bicycle leaning on a wall.")
    engine.index([docs])
    hits = engine.search("deer", k=2, space="lexical")
    assert [Path(h.path).name for h in hits] == ["heard.txt"]


def test_two_different_images_with_one_caption_are_not_folded(
    tmp_path: Path, tiny_clip_dir: Path, tiny_clap_dir: Path, encoder_pool: Callable[[str, Settings], Encoder]
) -> None:
    root = write_corpus(tmp_path / "corpus", images=6, texts=0)
    for name in ("image_001", "image_004"):
        (root / f"{name}.txt").write_text("A lion.")  # the same caption, two different pictures
    # Their caption vectors are identical (cosine 1); their pictures are not, though random-weight CLIP finds any
    # two pictures alike: at the default threshold, read against the space's typical pair, they stay apart.
    settings = make_settings(tmp_path / "home", tiny_clip_dir, tiny_clap_dir)
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        engine.index([root])
        results = engine.search("A lion.", k=10, collapse_duplicates=True, space="text")
    lions = [r for r in results if r.caption == "A lion."]
    assert len(lions) == 2, "two pictures that share a caption are two results"
    assert all(not r.duplicates for r in lions)
