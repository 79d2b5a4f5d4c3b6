"""Is the default fused search at least as good as its best single space? Recall@1/5/10 on the Tux Paint stamps
for user-phrased queries (``benchmarks/data/tuxpaint_queries.tsv``), per query set and target:

- ``paraphrase``: an animal described without its name ("a big wild cat with orange and black stripes");
- ``masked``: a longer caption said again with its key words masked by other words ("a tool that lets your doctor
  listen to your heart and lungs" for "A stethoscope lets your doctor ...");
- ``named``: the name with a few words around it, as people type it ("penguin on ice").

Targets: the stamp images, indexed with their captions as sidecars (``->image``; every image whose caption is
the target's counts), and the English spoken readings, transcribed by Whisper (``->reading``). The corpus is
every captioned PNG stamp and every English reading; it is staged, indexed and searched by ``xmodal eval``'s own
runner, so each source is the real search path: ``xmodal`` (fused, the default), ``xmodal:<space>`` and
``exact:<space>`` (one space alone) and ``bm25`` (the lexical space alone).

    python benchmarks/search_quality.py [--stamps /usr/share/tuxpaint/stamps] [--out FILE]

Prints a table and writes benchmarks/results/search_quality.json.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import write_result

from xmodal import Engine, Settings
from xmodal.evaluation.manifest import Manifest, ManifestItem, ManifestQuery
from xmodal.evaluation.runner import evaluate
from xmodal.indexer.decode import caption_from_sidecar

QUERIES = Path(__file__).parent / "data" / "tuxpaint_queries.tsv"
DEFAULT_STAMPS = Path("/usr/share/tuxpaint/stamps")
KS = (1, 5, 10)
FUSED = "xmodal"
RANDOM = "random"
TINY_CLIP = Path(__file__).parent.parent / "tests" / "fixtures" / "tiny_clip" / "open_clip_config.json"


def build_manifest(stamps: Path, queries: Path = QUERIES, *, readings: bool = True) -> Manifest:
    """Every captioned PNG stamp (with its caption) and English reading (unless not ``readings``) as items; the
    query file's queries."""
    manifest = Manifest()
    caption_of: dict[str, str] = {}
    images_by_caption: dict[str, set[str]] = defaultdict(set)
    for sidecar in sorted(stamps.rglob("*.txt")):
        caption = caption_from_sidecar(sidecar.read_bytes(), 500)
        stem = sidecar.with_suffix("")
        key = str(stem.relative_to(stamps))
        if not caption:
            continue
        caption_of[key] = caption
        image = stem.with_suffix(".png")
        if image.is_file():
            manifest.items[f"img:{key}"] = ManifestItem(f"img:{key}", file=image, caption=caption)
            images_by_caption[caption.lower()].add(f"img:{key}")
        reading = Path(f"{stem}_desc.ogg")
        if readings and reading.is_file():
            manifest.items[f"read:{key}"] = ManifestItem(f"read:{key}", file=reading)
    with queries.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle, delimiter="\t")):
            stamp, kind, text = row["stamp"], row["set"], row["query"]
            if stamp not in caption_of:
                raise SystemExit(f"{queries}: stamp '{stamp}' has no caption under {stamps}")
            images = images_by_caption.get(caption_of[stamp].lower())
            if images:
                manifest.queries.append(ManifestQuery(f"q{number}-img", frozenset(images), text, task=f"{kind}->image"))
            if f"read:{stamp}" in manifest.items:
                relevant = frozenset({f"read:{stamp}"})
                manifest.queries.append(ManifestQuery(f"q{number}-read", relevant, text, task=f"{kind}->reading"))
    return manifest


def random_clip(folder: Path) -> str:
    """ViT-B-32 with random weights (seed 0) as a local-dir open_clip model in ``folder``; made once, so a kept
    ``--work`` home is searched with the model that indexed it."""
    weights = folder / "open_clip_model.safetensors"
    if not weights.is_file():
        import json

        import open_clip
        import torch
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        preprocess = json.loads(TINY_CLIP.read_text())["preprocess_cfg"]
        config = {"model_cfg": open_clip.get_model_config("ViT-B-32"), "preprocess_cfg": preprocess}
        (folder / "open_clip_config.json").write_text(json.dumps(config))
        torch.manual_seed(0)
        model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    return f"open_clip:local-dir:{folder}"


def single_sources(sources: dict[str, Any]) -> list[str]:
    """The sources that are one space alone (by its index, and BM25)."""
    return sorted(s for s in sources if s != FUSED and not s.startswith("exact:"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stamps", type=Path, default=DEFAULT_STAMPS)
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: benchmarks/results/)")
    parser.add_argument(
        "--work", type=Path, default=None, help="keep the staged corpus and home here (re-runs skip indexing)"
    )
    parser.add_argument(
        "--clip",
        default=RANDOM,
        help="encoder spec of the clip space (default 'random': ViT-B-32 with seeded random weights, as on a machine "
        "without the pretrained ones: a space that is pure noise, which fusion must not let hurt)",
    )
    parser.add_argument("--no-readings", action="store_true", help="images only (skips transcribing the readings)")
    args = parser.parse_args()
    if not args.stamps.is_dir():
        sys.exit(f"{args.stamps} not found: apt-get install tuxpaint-stamps-default")
    manifest = build_manifest(args.stamps, readings=not args.no_readings)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temporary:
        scratch = args.work or Path(temporary)
        clip = random_clip(scratch / "random_clip") if args.clip == RANDOM else args.clip
        with Engine.open(settings=Settings(home=scratch / "home", clip_encoder=clip)) as engine:
            report = evaluate(engine, manifest, scratch / "staged")
    seconds = time.perf_counter() - started

    table: dict[str, dict[str, dict[str, float]]] = {}
    verdicts: dict[str, dict[str, Any]] = {}
    print(f"{'set':<22} {'source':<14} {'R@1':>6} {'R@5':>6} {'R@10':>6}")
    for task, sources in report.results.items():
        table[task] = {s: {f"R@{k}": float(sources[s][f"R@{k}"]) for k in KS} for s in sources}  # type: ignore[arg-type]
        singles = single_sources(sources)
        gaps = {f"R@{k}": table[task][FUSED][f"R@{k}"] - max(table[task][s][f"R@{k}"] for s in singles) for k in KS}
        verdicts[task] = {
            "queries": int(sources[FUSED]["queries"]),  # type: ignore[arg-type]
            "fused_minus_best_single": gaps,
            "never_worse": all(gap >= -0.01 for gap in gaps.values()),
            "better_somewhere": any(gap > 0 for gap in gaps.values()),
        }
        for source in [FUSED, *singles]:
            scores = table[task][source]
            print(f"{task:<22} {source:<14} {scores['R@1']:>6.3f} {scores['R@5']:>6.3f} {scores['R@10']:>6.3f}")
        gap_text = "  ".join(f"{k} {v:+.3f}" for k, v in gaps.items())
        print(f"{'':<22} {'fused - best':<14} {gap_text}")
    goal = all(v["never_worse"] for v in verdicts.values()) and any(v["better_somewhere"] for v in verdicts.values())
    print(f"goal (fused >= best single - 0.01 on every set, > on one): {'met' if goal else 'NOT met'}")
    target = write_result(
        "search_quality",
        {
            "items": report.items,
            "indexed": report.indexed,
            "seconds": round(seconds, 1),
            "results": table,
            "verdicts": verdicts,
            "goal_met": goal,
            "unavailable": report.unavailable,
            "clip_encoder": args.clip,
            "command": "python benchmarks/search_quality.py" + (" --no-readings" if args.no_readings else ""),
        },
        args.out,
    )
    print(f"written to {target}")


if __name__ == "__main__":
    main()
