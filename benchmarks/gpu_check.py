"""The measurements of benchmarks/gpu_check.sh: what xmodal's CUDA path does on one GPU, against its goals.

1. ViT-B-32 (random weights, as in pipeline_throughput.py) images/s: the model alone on pre-processed images, and
   the whole indexing pipeline with JPEGs decoded on the GPU (nvJPEG) and with Pillow, at batch 128/256/512, on
   generated ~500x375 photo-like JPEGs (some with EXIF orientations).
2. faiss-gpu flat and IVF-PQ (OPQ64_256,IVF4096,PQ64, the large-space tier) search QPS against the CPU, 1M vectors.
3. An out-of-memory error provoked on purpose (most GPU memory taken by ballast) and recovered from by the batch
   sizer, with every input's vector checked against a run without ballast.
4. Peak GPU memory per part.

    python benchmarks/gpu_check.py [--images 2048] [--vectors 1000000] [--out benchmarks/results/gpu.json]
    python benchmarks/gpu_check.py --cpu-smoke   # tiny sizes on the CPU: checks that the code runs, measures nothing

Goals (issue 16): >= 10,000 images/s end to end with GPU decoding, and pipeline / model-only >= 0.9 at the best
batch size.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import RESULTS, write_result

ENCODER = "open_clip:ViT-B-32"  # no pretrained tag: random weights, real architecture
TINY_CLIP = Path(__file__).parent.parent / "tests" / "fixtures" / "tiny_clip" / "open_clip_config.json"
GOAL_IMAGES_PER_S = 10_000
GOAL_RATIO = 0.9


@dataclass(frozen=True, slots=True)
class Sizes:
    images: int
    width: int
    height: int
    batches: tuple[int, ...]
    vectors: int
    dim: int
    queries: int
    cpu_flat_queries: int


FULL = Sizes(2048, 500, 375, (128, 256, 512), 1_000_000, 512, 10_000, 500)
SMOKE = Sizes(24, 64, 48, (4, 8), 2_000, 32, 50, 50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU; measures nothing")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--vectors", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    sizes = SMOKE if args.cpu_smoke else FULL
    if args.images or args.vectors:
        sizes = Sizes(
            **{**_fields(sizes), "images": args.images or sizes.images, "vectors": args.vectors or sizes.vectors}
        )
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --cpu-smoke to check the script on a CPU")
    out = args.out or (RESULTS / ("gpu_smoke.json" if args.cpu_smoke else "gpu.json"))
    with tempfile.TemporaryDirectory(prefix="xmodal-gpu-check-") as scratch:
        work = Path(scratch)
        encoder_spec = _tiny_clip(work) if args.cpu_smoke else ENCODER
        folder = _write_jpegs(work / "images", sizes)
        results: dict[str, Any] = {"mode": "cpu-smoke" if args.cpu_smoke else "gpu", "sizes": _fields(sizes)}
        results["encode"] = _peak(lambda: _encode(work, folder, encoder_spec, sizes, smoke=args.cpu_smoke))
        results["faiss"] = _peak(lambda: _faiss(sizes, smoke=args.cpu_smoke))
        results["oom"] = _peak(lambda: _out_of_memory(work, folder, encoder_spec, smoke=args.cpu_smoke))
    results["goals"] = _goals(results["encode"])
    command = "python benchmarks/gpu_check.py" + (" --cpu-smoke" if args.cpu_smoke else "")
    target = write_result("gpu", {**results, "command": command}, out)
    _print_table(results)
    print(f"written to {target}")


def _fields(sizes: Sizes) -> dict[str, Any]:
    return {name: getattr(sizes, name) for name in Sizes.__slots__}


def _peak(part: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one part; add its peak GPU memory (torch's allocator, and the device as a whole)."""
    import torch

    on_gpu = torch.cuda.is_available()
    if on_gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = part()
    result["seconds"] = round(time.perf_counter() - started, 1)
    if on_gpu:
        free, total = torch.cuda.mem_get_info()
        result["peak_torch_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["device_used_at_end_gib"] = round((total - free) / 2**30, 2)
    return result


def _tiny_clip(work: Path) -> str:
    """The test suite's tiny open_clip config with seeded random weights, as a local-dir spec."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    directory = work / "tiny_clip"
    directory.mkdir()
    shutil.copy(TINY_CLIP, directory)
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{directory}", load_weights=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, directory / "open_clip_model.safetensors")
    return f"open_clip:local-dir:{directory}"


def _write_jpegs(folder: Path, sizes: Sizes) -> Path:
    """Photo-like JPEGs (smooth colour fields plus noise, quality 90); every 8th carries an EXIF orientation."""
    from PIL import Image

    folder.mkdir(parents=True)

    def write(number: int) -> None:
        rng = np.random.default_rng(number)
        y, x = np.mgrid[0 : sizes.height, 0 : sizes.width] / max(sizes.width, sizes.height)
        channels = [
            np.sin(2 * np.pi * (x * rng.uniform(1, 4) + y * rng.uniform(1, 4)) + rng.uniform(0, 6)) for _ in "rgb"
        ]
        pixels = np.stack(channels, -1) * 100 + 128 + rng.normal(0, 12, (sizes.height, sizes.width, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        exif = Image.Exif()
        if number % 8 == 0:
            exif[0x0112] = 1 + number // 8 % 8
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90, exif=exif.tobytes())
        (folder / f"{number:05d}.jpg").write_bytes(buffer.getvalue())

    with ThreadPoolExecutor(os.cpu_count() or 4) as pool:
        list(pool.map(write, range(sizes.images)))
    return folder


def _settings(home: Path, encoder_spec: str, batch: int, decode: str, *, smoke: bool) -> Any:
    from xmodal import Settings

    return Settings(
        home=home,
        clip_encoder=encoder_spec,
        speech_model="",
        batch_size=batch,
        max_batch_size=batch,
        auto_batch_size=False,  # the measured batch size, not a learned one
        jpeg_decode=decode,
        device="cpu" if smoke else "cuda",
        decode_workers=2 if smoke else max(4, (os.cpu_count() or 8) - 2),
        hub_timeout_s=0.5,
        collapse_duplicates=False,
    )


def _encode(work: Path, folder: Path, encoder_spec: str, sizes: Sizes, *, smoke: bool) -> dict[str, Any]:
    """Images/s of the model alone and of the pipeline with GPU and with Pillow decoding, per batch size."""
    from PIL import Image, ImageOps

    from xmodal import Engine

    files = sorted(folder.glob("*.jpg"))
    warm = work / "warm-up"
    warm.mkdir(exist_ok=True)
    for path in files[: max(sizes.batches)]:
        shutil.copy(path, warm / f"warm-{path.name}")
    rows = []
    for batch in sizes.batches:
        row: dict[str, Any] = {"batch": batch}
        for decode in ("device", "cpu"):
            settings = _settings(work / f"home-{batch}-{decode}", encoder_spec, batch, decode, smoke=smoke)
            with Engine.open(settings=settings) as engine:
                encoder = engine.spaces["clip"].encoder
                encoder.load()
                if decode == "cpu":  # model only: decoded and pre-processed beforehand, batches of the same size
                    prepared = [
                        encoder.prepare_image(ImageOps.exif_transpose(Image.open(p)).convert("RGB")) for p in files
                    ]
                    encoder.encode_prepared_images(prepared[:batch])  # warm-up (cuDNN/cuBLAS autotuning)
                    _synchronize()
                    started = time.perf_counter()
                    for start in range(0, len(prepared), batch):
                        encoder.encode_prepared_images(prepared[start : start + batch])
                    _synchronize()
                    row["model_only"] = len(prepared) / (time.perf_counter() - started)
                engine.index([warm])  # untimed: loads every space's model, starts nvJPEG, tunes kernels
                _synchronize()
                started = time.perf_counter()
                report = engine.index([folder])
                _synchronize()
                seconds = time.perf_counter() - started
                if report.indexed != len(files):
                    raise RuntimeError(f"{decode} decoding indexed {report.indexed} of {len(files)}: {report.failures}")
                row[f"pipeline_{decode}_decode"] = len(files) / seconds
                row[f"timings_{decode}_decode"] = {k: round(v, 2) for k, v in report.timings.items()}
        row["ratio_gpu_decode"] = row["pipeline_device_decode"] / row["model_only"]
        rows.append(row)
    return {"encoder": encoder_spec if not smoke else "tiny_clip (smoke)", "images": len(files), "rows": rows}


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _faiss(sizes: Sizes, *, smoke: bool) -> dict[str, Any]:
    """Search QPS (k=10) of flat and IVF-PQ indexes on the CPU and through the store's GPU replica."""
    import faiss

    from xmodal.encoders.base import l2_normalise
    from xmodal.store.ann import GPU_MAX_K, GpuReplica, IndexPolicy, SearchTuning, choose_index

    rng = np.random.default_rng(0)
    centres = l2_normalise(rng.normal(size=(1000, sizes.dim)))
    vectors = l2_normalise(
        centres[rng.integers(0, 1000, sizes.vectors)]
        + 0.6 * rng.normal(size=(sizes.vectors, sizes.dim)) / np.sqrt(sizes.dim)
    )
    queries = l2_normalise(
        vectors[rng.integers(0, sizes.vectors, sizes.queries)]
        + 0.05 * rng.normal(size=(sizes.queries, sizes.dim)) / np.sqrt(sizes.dim)
    )
    ids = np.arange(sizes.vectors)
    gpus = faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0
    result: dict[str, Any] = {"vectors": sizes.vectors, "dim": sizes.dim, "gpus": gpus, "k": 10}

    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(sizes.dim))
    flat.add_with_ids(vectors, ids)
    result["flat"] = _qps_pair(flat, SearchTuning(), queries, sizes.cpu_flat_queries, gpus)

    plan = choose_index(sizes.vectors, sizes.dim, IndexPolicy(exact_below=0, ivf_above=0))
    started = time.perf_counter()
    ivfpq = _ivfpq(plan.key, sizes.dim, vectors[rng.permutation(sizes.vectors)[:100_000]], gpus)
    ivfpq.add_with_ids(vectors, ids)
    result["ivfpq_build_s"] = round(time.perf_counter() - started, 1)
    tuning = SearchTuning(nprobe=32 if not smoke else 4)
    result["ivfpq"] = {
        "key": plan.key,
        "nprobe": tuning.nprobe,
        **_qps_pair(ivfpq, tuning, queries, sizes.queries, gpus),
    }
    if gpus:
        replica = GpuReplica()
        result["k_over_gpu_limit_answered_on_cpu"] = (
            replica.search(flat, 1, SearchTuning(), queries[:2], GPU_MAX_K + 1) is None
        )
    return result


def _ivfpq(key: str, dim: int, training: np.ndarray, gpus: int) -> Any:
    """The large-space tier's index, trained as the store trains it (k-means on the GPU), without faiss's
    polysemous training (minutes for PQ64 and unused by the search)."""
    import faiss

    inner = faiss.index_factory(dim, key, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(inner)
    faiss.downcast_index(ivf).do_polysemous_training = False
    if isinstance(inner, faiss.IndexPreTransform):  # the store's OPQ settings (xmodal.store.ann.empty_index)
        rotation = faiss.downcast_VectorTransform(inner.chain.at(0))
        rotation.niter = 10
        rotation.max_train_points = 25_000
    clustering = faiss.index_cpu_to_all_gpus(faiss.IndexFlatL2(ivf.d)) if gpus else None
    ivf.clustering_index = clustering
    try:
        inner.train(np.ascontiguousarray(training, dtype=np.float32))
    finally:
        ivf.clustering_index = None
        del clustering
    return faiss.IndexIDMap2(inner)


def _qps_pair(index: Any, tuning: Any, queries: np.ndarray, cpu_queries: int, gpus: int) -> dict[str, Any]:
    import faiss

    from xmodal.store.ann import GpuReplica, search_parameters

    params = search_parameters(index, tuning, None).params
    index.search(queries[:10], 10, params=params)
    started = time.perf_counter()
    _, cpu_ids = index.search(queries[:cpu_queries], 10, params=params)
    row: dict[str, Any] = {
        "cpu_qps": cpu_queries / (time.perf_counter() - started),
        "threads": faiss.omp_get_max_threads(),
    }
    if gpus:
        replica = GpuReplica()
        if replica.search(index, 1, tuning, queries[:10], 10) is None:
            row["gpu_error"] = "the GPU replica could not be made (see the warning above)"
            return row
        started = time.perf_counter()
        found = replica.search(index, 1, tuning, queries, 10)
        row["gpu_qps"] = len(queries) / (time.perf_counter() - started)
        assert found is not None
        row["gpu_top1_agrees_with_cpu"] = float(np.mean(found[1][:cpu_queries, 0] == cpu_ids[:, 0]))
        row["speedup"] = row["gpu_qps"] / row["cpu_qps"]
    return row


def _out_of_memory(work: Path, folder: Path, encoder_spec: str, *, smoke: bool) -> dict[str, Any]:
    """Fill the GPU with ballast, encode a batch too large for what is left, and check no input was lost."""
    import torch
    from PIL import Image

    from xmodal import Engine
    from xmodal.encoders.batching import BatchSizer

    files = sorted(folder.glob("*.jpg"))[: 16 if smoke else 512]
    settings = _settings(work / "home-oom", encoder_spec, len(files), "device", smoke=smoke)
    with Engine.open(settings=settings) as engine:
        encoder = engine.spaces["clip"].encoder
        encoder.load()
        prepared = [encoder.prepare_image(Image.open(p).convert("RGB")) for p in files]
        expected = encoder.encode_prepared_images(prepared)
        encode: Callable[[Any], np.ndarray] = encoder.encode_prepared_images
        ballast = None
        if smoke:  # no GPU: a stand-in that runs out of memory above a quarter of the inputs
            limit = len(files) // 4

            def encode(batch: Any) -> np.ndarray:
                if len(batch) > limit:
                    raise torch.OutOfMemoryError("CUDA out of memory (simulated for --cpu-smoke)")
                return encoder.encode_prepared_images(batch)
        else:
            torch.cuda.empty_cache()
            free, _ = torch.cuda.mem_get_info()
            ballast = torch.empty(max(0, free - 768 * 2**20), dtype=torch.uint8, device="cuda")
        sizer = BatchSizer(len(files), maximum=len(files), grow=False)
        started = time.perf_counter()
        try:
            vectors = sizer.encode(encode, prepared)
        finally:
            del ballast
        seconds = time.perf_counter() - started
    agreement = np.sum(vectors * expected, axis=1)
    return {
        "inputs": len(files),
        "simulated": smoke,
        "backoffs": sizer.backoffs,
        "final_batch": sizer.size,
        "vectors_out": len(vectors),
        "all_inputs_kept": bool(len(vectors) == len(files) and np.all(agreement > 0.99)),
        "min_cosine_to_unconstrained_run": float(agreement.min()),
        "recovery_seconds": round(seconds, 2),
    }


def _goals(encode: dict[str, Any]) -> dict[str, Any]:
    best = max(encode["rows"], key=lambda row: row["pipeline_device_decode"])
    return {
        "best_batch": best["batch"],
        "pipeline_images_per_s": best["pipeline_device_decode"],
        "ratio": best["ratio_gpu_decode"],
        "goal_images_per_s": GOAL_IMAGES_PER_S,
        "goal_ratio": GOAL_RATIO,
        "met": best["pipeline_device_decode"] >= GOAL_IMAGES_PER_S and best["ratio_gpu_decode"] >= GOAL_RATIO,
    }


def _print_table(results: dict[str, Any]) -> None:
    print(f"\n{results['mode']}: {results['encode']['encoder']}, {results['encode']['images']} JPEGs")
    print(f"{'batch':>6} {'model-only img/s':>17} {'GPU-decode img/s':>17} {'Pillow img/s':>13} {'ratio':>6}")
    for row in results["encode"]["rows"]:
        print(
            f"{row['batch']:>6} {row['model_only']:>17.0f} {row['pipeline_device_decode']:>17.0f}"
            f" {row['pipeline_cpu_decode']:>13.0f} {row['ratio_gpu_decode']:>6.2f}"
        )
    goals = results["goals"]
    print(
        f"goal >= {GOAL_IMAGES_PER_S} img/s and ratio >= {GOAL_RATIO}: "
        f"{goals['pipeline_images_per_s']:.0f} img/s, ratio {goals['ratio']:.2f} at batch {goals['best_batch']}"
        f" -> {'MET' if goals['met'] else 'NOT MET'}"
    )
    search = results["faiss"]
    print(f"\nfaiss, {search['vectors']} x {search['dim']}, k=10 ({search['gpus']} GPU)")
    print(f"{'index':>8} {'CPU QPS':>10} {'GPU QPS':>10} {'speedup':>8}")
    for name in ("flat", "ivfpq"):
        row = search[name]
        gpu = f"{row['gpu_qps']:>10.0f} {row['speedup']:>8.1f}" if "gpu_qps" in row else f"{'-':>10} {'-':>8}"
        print(f"{name:>8} {row['cpu_qps']:>10.0f} {gpu}")
    oom = results["oom"]
    print(
        f"\nOOM{' (simulated)' if oom['simulated'] else ''}: batch {oom['inputs']} -> {oom['final_batch']} after"
        f" {oom['backoffs']} back-offs; all {oom['inputs']} inputs kept: {oom['all_inputs_kept']}"
    )
    peaks = {part: results[part].get("peak_torch_gib") for part in ("encode", "faiss", "oom")}
    print(f"peak GPU memory (torch allocator, GiB): {peaks}")


if __name__ == "__main__":
    main()
