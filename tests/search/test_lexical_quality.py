"""Lexical scores mean something alone: stopwords do not match, a partial match is weak, a match by sound counts
less than the word, and a filter never drops a lexical hit that passes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from xmodal.config import Settings
from xmodal.engine import Engine
from xmodal.store.catalog import ItemRecord, WriteRequest


def _item(path: str, modality: str, body: str | None = None, **fields: object) -> WriteRequest:
    record = ItemRecord(path=path, source="file:///zoo", size=1, mtime_ns=1, modality=modality, **fields)  # type: ignore[arg-type]
    return WriteRequest(record, {}, body=body)


def _engine(
    home: Path,
    captions: list[tuple[str, dict[str, str]]],
    transcripts: tuple[str, ...] = (),
    captioned_audio: tuple[str, ...] = (),
    **overrides: object,
) -> Engine:
    """A home of captioned images, of audio clips whose speech was heard as ``transcripts``, and of audio clips
    with a typed caption (``captioned_audio``) and no transcript."""
    engine = Engine.open(settings=Settings(home=home, collapse_duplicates=False, **overrides))  # type: ignore[arg-type]
    requests = [
        _item(f"/zoo/item{number:03d}.png", "image", caption=caption, user_metadata=metadata)
        for number, (caption, metadata) in enumerate(captions)
    ]
    requests += [
        _item(f"/zoo/clip{number:03d}.ogg", "audio", body=transcript, transcript=transcript)
        for number, transcript in enumerate(transcripts)
    ]
    requests += [
        _item(f"/zoo/sound{number:03d}.ogg", "audio", caption=caption) for number, caption in enumerate(captioned_audio)
    ]
    engine.catalog.write_items(requests)
    return engine


def _captions(engine: Engine, text: str, **options: object) -> list[tuple[str, float]]:
    results = engine.search(text, space="lexical", explain=True, **options)  # type: ignore[arg-type]
    return [(result.caption or "", result.score) for result in results]


def test_a_one_stopword_match_ranks_below_a_full_phrase_match(tmp_path: Path) -> None:
    captions = [("A stethoscope lets your doctor listen to your heart.", {}), ("A woolly hat to wear on the head.", {})]
    captions += [(f"A red brick number {n}.", {}) for n in range(20)]  # so that "head" and "wear" are rare words
    with _engine(tmp_path / "home", captions) as engine:
        found = _captions(engine, "something to wear on your head")
    assert found[0][0] == "A woolly hat to wear on the head."
    assert all(caption != "A stethoscope lets your doctor listen to your heart." for caption, _ in found)  # "your"


def test_a_match_on_one_word_of_several_is_weak(tmp_path: Path) -> None:
    captions = [("A big eared rabbit.", {}), ("A tiger, a big wild cat with stripes.", {})]
    captions += [(f"A red brick number {n}.", {}) for n in range(20)]
    with _engine(tmp_path / "home", captions, lexical_top_z=3.0, lexical_share_power=1.0) as engine:
        found = dict(_captions(engine, "a big wild cat with stripes"))
    assert found["A tiger, a big wild cat with stripes."] == pytest.approx(3.0, rel=0.05)
    assert found["A big eared rabbit."] < 1.0  # one word of four: under a third of the full match


def test_query_words_no_text_holds_still_count_as_unmatched(tmp_path: Path) -> None:
    captions = [("A black bird.", {}), ("A crow caws loudly.", {})]
    captions += [(f"A red brick number {n}.", {}) for n in range(20)]
    with _engine(tmp_path / "home", captions, lexical_top_z=3.0, lexical_share_power=1.0) as engine:
        found = dict(_captions(engine, "a black bird that croaks"))  # no text says "croaks"
    # "black bird" is two words of three, one of them unknown (so rarer than any): well under a full match.
    assert found["A black bird."] < 0.75 * 3.0


def test_a_phonetic_only_match_ranks_below_an_exact_one(tmp_path: Path) -> None:
    captions = [("Dry bread.", {}), ("A deer.", {}), ("Dear friends.", {})]
    captions += [(f"A red brick number {n}.", {}) for n in range(20)]
    with _engine(tmp_path / "home", captions, lexical_phonetic_weight=0.5) as engine:
        found = _captions(engine, "deer")
    assert found[0][0] == "A deer."
    by_caption = dict(found)
    assert by_caption["Dear friends."] <= 0.5 * by_caption["A deer."] + 1e-9  # found by sound, at half the worth


def test_a_phonetic_match_in_a_speech_transcript_counts_nearly_as_the_word(tmp_path: Path) -> None:
    """A recogniser chooses the spelling of what it hears ("bee" as "B."): in a transcript, a word that sounds like
    the query's is most likely the query's word; in typed text, an audio item's caption included, only a hint."""
    captions = [("B.", {})] + [(f"A red brick number {n}.", {}) for n in range(20)]
    with _engine(
        tmp_path / "home", captions, transcripts=("B.",), captioned_audio=("B.",), lexical_top_z=3.0
    ) as engine:
        results = engine.search("bee", space="lexical", explain=True)
    found = {result.path: result.explanation[0] for result in results}
    heard, typed, typed_audio = found["/zoo/clip000.ogg"], found["/zoo/item000.png"], found["/zoo/sound000.ogg"]
    assert heard.raw == pytest.approx(1.0, rel=0.01)  # the whole query, by sound
    assert heard.calibrated == pytest.approx(3.0 * 0.8, rel=0.01)  # lexical_transcript_phonetic_weight
    assert typed.calibrated == pytest.approx(3.0 * 0.5, rel=0.01)  # lexical_phonetic_weight
    assert typed_audio.calibrated == pytest.approx(typed.calibrated, rel=0.01)  # a caption is typed text


def test_a_word_in_a_transcript_outranks_one_that_only_sounds_alike(tmp_path: Path) -> None:
    # Metaphone gives "cat" and "cut" one code: the transcript that says "cat" must still come first.
    captions = [(f"A red brick number {n}.", {}) for n in range(20)]
    with _engine(tmp_path / "home", captions, transcripts=("Cut the rope.", "A cat.")) as engine:
        results = engine.search("cat", space="lexical")
    assert [result.transcript for result in results] == ["A cat.", "Cut the rope."]


def test_a_partial_match_counts_less_than_its_share(tmp_path: Path) -> None:
    captions = [("A tiger, a big wild cat with stripes.", {}), ("A wild boar.", {})]
    captions += [(f"A red brick number {n}.", {}) for n in range(20)]
    with _engine(tmp_path / "home", captions, lexical_top_z=6.0, lexical_share_power=2.0) as engine:
        results = engine.search("a big wild cat with stripes", space="lexical", explain=True)
    by_caption = {result.caption: result.explanation[0] for result in results}
    full, partial = by_caption["A tiger, a big wild cat with stripes."], by_caption["A wild boar."]
    assert full.raw > 0.9 and 0 < partial.raw < 0.5  # the shares: (nearly) every word; "wild", one word of four
    for match in (full, partial):
        assert match.calibrated == pytest.approx(6.0 * match.raw**2, rel=1e-6)


@pytest.mark.parametrize("passing", [2, 30], ids=["selective", "broad"])
def test_a_filter_keeps_the_lexical_hits_that_pass_it(tmp_path: Path, passing: int) -> None:
    # Many better matches fail the filter; the few that pass must still come back, however small the pool.
    captions = [(f"A red deer in the snow, number {n}.", {"color": "blue"}) for n in range(60)]
    captions += [
        (f"A deer, far away, in a very long caption about hills number {n}.", {"color": "green"})
        for n in range(passing)
    ]
    with _engine(tmp_path / "home", captions, fusion_candidates=4) as engine:
        found = _captions(engine, "red deer", where={"color": "green"}, k=5)
    assert len(found) == min(5, passing)
    assert all("far away" in caption for caption, _ in found)


def test_a_word_most_rows_hold_is_left_out_of_the_match(tmp_path: Path) -> None:
    """BM25 gives a word that half the rows or more hold no weight, and its postings are the longest to walk (at 200,000
    items such words made a query's lexical half 20 times slower): it is left out, the ranking stays."""
    captions = [(f"A red brick number {n}.", {}) for n in range(20)]
    captions += [("A fox in the snow.", {}), ("A snow owl at night.", {})]
    with _engine(tmp_path / "home", captions) as engine:
        found = _captions(engine, "brick fox", k=30)
        only_common = _captions(engine, "red brick", k=30)  # every word common: they are all kept
        with_unknown = _captions(engine, "brick lorry", k=30)
    with _engine(tmp_path / "every", captions, lexical_skip_weightless=False) as engine:
        every = _captions(engine, "brick fox", k=30)
    assert [caption for caption, _ in found] == ["A fox in the snow."]
    assert every[0][0] == found[0][0] and every[0][1] == pytest.approx(found[0][1], rel=1e-3)  # scored the same
    assert len(every) == 21  # left in, the common word brought 20 matches of no weight
    assert len(only_common) == 20
    assert len(with_unknown) == 20  # the other word matches nothing: the common one is all the query has


def test_a_fused_search_matches_its_lexical_candidates_on_the_informative_words(tmp_path: Path) -> None:
    """Scoring every row that holds a common word grows with the home: a fused search leaves the commonest words of
    its query out of the lexical candidate match (they stay in the shares, which are exact); a lexical search alone
    matches every word."""
    from sqlalchemy import event

    captions = [("A walrus on the ice.", {})] + [(f"A blue cup number {n}.", {}) for n in range(15)]
    captions += [(f"A stone number {n}.", {}) for n in range(40)]
    with _engine(tmp_path / "home", captions) as engine:
        expressions: list[str] = []

        def record(conn: object, cursor: object, statement: str, params: object, *args: object) -> None:
            # the candidate matches: not a term's best score alone (LIMIT 1), not a share (+rowid IN ...)
            candidates = "bm25" in statement and "+rowid" not in statement and isinstance(params, (tuple, list))
            if candidates and any(isinstance(value, int) and value > 1 for value in params):  # type: ignore[union-attr]
                expressions.extend(str(value) for value in params if isinstance(value, str))  # type: ignore[union-attr]

        event.listen(engine.catalog._engine, "before_cursor_execute", record)
        fused = engine.search("blue walrus", explain=True, k=20)
        fused_expressions, expressions[:] = list(expressions), []
        alone = engine.search("blue walrus", space="lexical", explain=True, k=20)
    assert fused_expressions and not any('"blue"' in e for e in fused_expressions), fused_expressions
    assert any('"blue"' in e for e in expressions), expressions
    lexical_alone = {r.path: r.explanation[0].calibrated for r in alone}
    for result in fused:  # every candidate's lexical evidence is the exact one
        lexical = [c.calibrated for c in result.explanation if c.space == "lexical"]
        if lexical:
            assert lexical[0] == pytest.approx(lexical_alone[result.path], rel=1e-6)
    assert fused[0].caption == "A walrus on the ice."
