"""What a nightly run over a bucket and over a WebDataset shard set costs when nothing changed.

Starts moto's S3 server on a loopback port, uploads small PNG objects (half with a caption sidecar) and a shard
set written with ``webdataset.TarWriter``, indexes both once (a tiny random-weight CLIP, so the first run times
the pipeline, not a model), then times a re-run in a fresh engine and counts, from the server's request log, the
listing requests and the object reads (GET/HEAD of an object) it made.

    python benchmarks/remote_rerun.py [--objects 1000] [--shards 10] [--samples 100]

Prints a table and writes benchmarks/results/remote_rerun.json. Needs the cloud extra and moto[server].
"""

from __future__ import annotations

import argparse
import io
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import open_clip
import torch
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))

from common import write_result

from xmodal import Engine, Settings

TINY_CLIP = Path(__file__).parent.parent / "tests" / "fixtures" / "tiny_clip" / "open_clip_config.json"
WORDS = ["harbor", "lantern", "meadow", "quarry", "thistle"]


def png(rng: random.Random) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), tuple(rng.randrange(256) for _ in range(3))).save(buffer, format="PNG")
    return buffer.getvalue()


def tiny_clip(folder: Path) -> str:
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(TINY_CLIP.read_text())
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors")
    return f"open_clip:local-dir:{folder}"


def start_moto(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=out, stderr=out)  # fmt: skip
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return process, f"http://127.0.0.1:{port}"


def requests(log: Path) -> list[tuple[str, str]]:
    return re.findall(r'"(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP/1\.1', log.read_text(errors="replace"))


def upload(bucket: str, objects: int, shards: int, samples: int) -> None:
    import webdataset

    rng = random.Random(0)
    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    for number in range(objects):
        client.put_object(Bucket=bucket, Key=f"photos/{number // 100:03d}/{number}.png", Body=png(rng))
        if number % 2 == 0:
            caption = " ".join(rng.choice(WORDS) for _ in range(6)).encode()
            client.put_object(Bucket=bucket, Key=f"photos/{number // 100:03d}/{number}.txt", Body=caption)
    for shard in range(shards):
        buffer = io.BytesIO()
        with webdataset.TarWriter(buffer) as writer:
            for number in range(samples):
                caption = " ".join(rng.choice(WORDS) for _ in range(6))
                writer.write(
                    {"__key__": f"{shard:05d}{number:04d}", "png": png(rng), "txt": caption, "json": {"shard": shard}}
                )
        client.put_object(Bucket=bucket, Key=f"shards/{shard:05d}.tar", Body=buffer.getvalue())


def measure(settings: Settings, root: str, log: Path, bucket: str) -> dict[str, float | int]:
    started = time.perf_counter()
    with Engine.open(settings=settings) as engine:
        first = engine.index([root])
    first_seconds = time.perf_counter() - started
    mark = len(requests(log))
    started = time.perf_counter()
    with Engine.open(settings=settings) as engine:
        second = engine.index([root])
    seconds = time.perf_counter() - started
    made = requests(log)[mark:]
    assert second.unchanged == first.indexed and first.failed == 0, (first, second)
    return {
        "items": second.scanned,
        "first_run_seconds": first_seconds,
        "rerun_seconds": seconds,
        "rerun_scan_seconds": second.timings.get("scan_s", 0.0),
        "rerun_listing_requests": sum(1 for _, target in made if "list-type" in target),
        "rerun_object_gets": sum(1 for method, target in made if method == "GET" and target.startswith(f"/{bucket}/")),
        "rerun_object_heads": sum(1 for method, target in made if method == "HEAD"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        log = scratch / "moto.log"
        process, endpoint = start_moto(log)
        os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench",
                           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})  # fmt: skip
        try:
            upload("bench", args.objects, args.shards, args.samples)
            settings = Settings(home=scratch / "home", clip_encoder=tiny_clip(scratch / "clip"), device="cpu")
            rows = {
                "bucket": measure(settings, "s3://bench/photos", log, "bench"),
                "shards": measure(settings, f"s3://bench/shards/{{00000..{args.shards - 1:05d}}}.tar", log, "bench"),
            }
        finally:
            os.kill(process.pid, signal.SIGTERM)
            process.wait()
    print(f"{'source':>7} {'items':>6} {'first run s':>12} {'re-run s':>9} {'listings':>9} {'GETs':>5} {'HEADs':>6}")
    for name, row in rows.items():
        print(f"{name:>7} {row['items']:>6} {row['first_run_seconds']:>12.1f} {row['rerun_seconds']:>9.2f} "
              f"{row['rerun_listing_requests']:>9} {row['rerun_object_gets']:>5} "
              f"{row['rerun_object_heads']:>6}")  # fmt: skip
    command = (f"python benchmarks/remote_rerun.py --objects {args.objects} --shards {args.shards} "
               f"--samples {args.samples}")  # fmt: skip
    print(f"written to {write_result('remote_rerun', {**rows, 'command': command}, args.out)}")


if __name__ == "__main__":
    main()
