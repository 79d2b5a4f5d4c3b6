"""Indexing throughput of the whole pipeline against the model alone, in one run.

The pipeline (walk, read, decode, pre-process in threads, encode, write catalog rows and vectors) indexes a folder
of real images; then the same encoder embeds the same images, already decoded and pre-processed, in batches of the
same size. The ratio says how much the pipeline around the model costs (the goal is at least 0.9).

The model is open_clip ViT-B-32 with random weights (the compute of the real one; no download needed).

    python benchmarks/pipeline_throughput.py [--images 300] [--stamps /usr/share/tuxpaint/stamps]

Prints a table and writes benchmarks/results/pipeline_throughput.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import write_result
from tuxpaint import DEFAULT_STAMPS

from xmodal import Engine, Settings
from xmodal.indexer.decode import ImageLimits, decode_image

ENCODER = "open_clip:ViT-B-32"  # no pretrained tag: random weights, real architecture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--stamps", type=Path, default=DEFAULT_STAMPS)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    sources = sorted(args.stamps.rglob("*.png"))[: args.images]
    if not sources:
        sys.exit(f"no PNG images under {args.stamps}: apt-get install tuxpaint-stamps-default")

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "images"
        folder.mkdir()
        for number, source in enumerate(sources):  # neutral names, no caption files: images only
            os.symlink(source, folder / f"{number:05d}.png")
        settings = Settings(
            home=Path(scratch) / "home", clip_encoder=ENCODER, speech_model="", batch_size=args.batch_size
        )
        with Engine.open(settings=settings) as engine:
            encoder = engine.spaces["clip"].encoder
            encoder.load()  # both measurements start with the model in memory
            started = time.perf_counter()
            report = engine.index([folder])
            pipeline_seconds = time.perf_counter() - started

            limits = ImageLimits(settings.max_image_pixels)
            prepared = [encoder.prepare_image(decode_image(p.read_bytes(), limits).image) for p in sources]
            started = time.perf_counter()
            for start in range(0, len(prepared), args.batch_size):
                encoder.encode_prepared_images(prepared[start : start + args.batch_size])
            model_seconds = time.perf_counter() - started

    pipeline_rate = report.indexed / pipeline_seconds
    model_rate = len(prepared) / model_seconds
    ratio = pipeline_rate / model_rate
    print(f"{'images':>7} {'batch':>6} {'pipeline img/s':>15} {'model-only img/s':>17} {'ratio':>6}")
    print(f"{report.indexed:>7} {args.batch_size:>6} {pipeline_rate:>15.1f} {model_rate:>17.1f} {ratio:>6.2f}")
    target = write_result(
        "pipeline_throughput",
        {
            "encoder": ENCODER,
            "images": report.indexed,
            "batch_size": args.batch_size,
            "pipeline_images_per_second": pipeline_rate,
            "model_only_images_per_second": model_rate,
            "ratio": ratio,
            "pipeline_timings": report.timings,
            "command": f"python benchmarks/pipeline_throughput.py --images {args.images}",
        },
        args.out,
    )
    print(f"written to {target}")


if __name__ == "__main__":
    main()
