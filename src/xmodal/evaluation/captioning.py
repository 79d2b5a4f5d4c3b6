"""Image -> text lookup scored as captioning: the text an image query retrieves first, against the reference
captions (the query's relevant texts), with the COCO caption metrics BLEU-4, METEOR and CIDEr as `pycocoevalcap`
computes them (its PTB tokenizer and METEOR run on Java). A lookup that puts a right caption first scores as that
caption would; a wrong one still scores for the words it shares with the references, which Recall@K does not see.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import shutil
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

CAPTION_METRICS = ("BLEU-4", "METEOR", "CIDEr")


def captioning_unavailable() -> str | None:
    """Why the caption metrics cannot be computed here, or ``None`` when they can."""
    if importlib.util.find_spec("pycocoevalcap") is None:
        return "the caption metrics need pycocoevalcap: pip install 'xmodal[caption]'"
    if shutil.which("java") is None:
        return "pycocoevalcap's tokenizer and METEOR run on Java: apt-get install default-jre-headless"
    return None


class CaptionScorer:
    """Scores candidate captions against references; holds one METEOR process (a JVM that takes seconds to start)
    for every call until closed."""

    def __init__(self) -> None:
        reason = captioning_unavailable()
        if reason is not None:
            raise RuntimeError(reason)
        from pycocoevalcap.meteor.meteor import Meteor

        self._meteor: Any = Meteor()

    def __enter__(self) -> CaptionScorer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the METEOR process."""
        if self._meteor is not None:
            process = self._meteor.meteor_p
            process.stdin.close()
            process.kill()
            process.wait()
            self._meteor = None

    def score(self, candidates: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
        """Corpus BLEU-4, METEOR and CIDEr of ``candidates`` (query id -> the one text it retrieved first) against
        ``references`` (query id -> its reference captions); queries without a candidate or references are left
        out. Empty when none is left."""
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        if self._meteor is None:
            raise RuntimeError("this scorer is closed")
        ids = [q for q in candidates if candidates[q].strip() and any(r.strip() for r in references.get(q, ()))]
        if not ids:
            return {}
        gts = {q: [{"caption": r} for r in references[q] if r.strip()] for q in ids}
        res = {q: [{"caption": candidates[q]}] for q in ids}
        with _quiet():  # the scorers print their internals
            tokenizer = PTBTokenizer()
            gts_tokens, res_tokens = tokenizer.tokenize(gts), tokenizer.tokenize(res)
            bleu, _ = Bleu(4).compute_score(gts_tokens, res_tokens)
            cider, _ = Cider().compute_score(gts_tokens, res_tokens)
            meteor, _ = self._meteor.compute_score(gts_tokens, res_tokens)
        return {"BLEU-4": float(bleu[3]), "METEOR": float(meteor), "CIDEr": float(cider)}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()):
        yield
