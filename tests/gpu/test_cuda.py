"""The CUDA path for real: nvJPEG decoding, the batch sizer's out-of-memory recovery, fingerprints on the GPU, and
faiss-gpu replicas. Skipped without a CUDA device (and without faiss-gpu for the FAISS tests); the CPU-side tests
of the same logic run everywhere (tests/encoders/test_jpeg.py, test_batching.py, tests/store/test_gpu_replica.py).
``benchmarks/gpu_check.sh`` runs these first on a lent GPU.
"""

from __future__ import annotations

import io
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from tests.conftest import make_settings
from xmodal.config import DevicePreference, JpegDecode
from xmodal.encoders import build_encoder
from xmodal.encoders.base import l2_normalise
from xmodal.encoders.batching import BatchSizer
from xmodal.encoders.jpeg import EncodedJpeg, decode_batch
from xmodal.store.ann import GPU_MAX_K, GpuReplica, IndexKind, IndexPlan, IndexPolicy, SearchTuning, empty_index

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
needs_faiss_gpu = pytest.mark.skipif(
    not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0, reason="needs faiss-gpu and a GPU"
)
CUDA = torch.device("cuda")


def _encoder(tmp_path: Path, clip_dir: Path, device: DevicePreference):
    settings = make_settings(tmp_path / f"home-{device.value}", clip_dir, device=device, jpeg_decode=JpegDecode.AUTO)
    encoder = build_encoder(settings.clip_encoder, settings)
    encoder.load()
    return encoder


def _quadrants(width: int = 64, height: int = 48) -> Image.Image:
    image = Image.new("RGB", (width, height))
    for (left, top), colour in zip(
        ((0, 0), (width // 2, 0), (0, height // 2), (width // 2, height // 2)),
        ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)),
        strict=True,
    ):
        image.paste(colour, (left, top, left + width // 2, top + height // 2))
    return image


def _jpeg(image: Image.Image, orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_nvjpeg_decoding_applies_the_exif_orientation(tmp_path: Path, tiny_clip_dir: Path, orientation: int) -> None:
    gpu = _encoder(tmp_path, tiny_clip_dir, DevicePreference.CUDA)
    data = _jpeg(_quadrants(), orientation)
    prepared = gpu.prepare_jpeg(data)
    assert isinstance(prepared, EncodedJpeg)  # auto: decoded on the GPU
    tensor = decode_batch([prepared], CUDA, gpu._on_device_preprocess, gpu._preprocess)[0]
    assert tensor.device.type == "cuda"
    upright = gpu.prepare_image(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert float((tensor.cpu() - upright).abs().mean()) < 0.05


def test_gpu_and_cpu_encoders_agree_on_vectors_and_fingerprint(tmp_path: Path, tiny_clip_dir: Path) -> None:
    gpu = _encoder(tmp_path, tiny_clip_dir, DevicePreference.CUDA)
    cpu = _encoder(tmp_path, tiny_clip_dir, DevicePreference.CPU)
    assert gpu.fingerprint == cpu.fingerprint  # an indexer on a GPU and a server on a CPU share spaces
    images = [_quadrants(96 + 8 * n, 64) for n in range(4)]
    on_gpu = gpu.encode_prepared_images([gpu.prepare_jpeg(_jpeg(image)) for image in images])
    on_cpu = cpu.encode_images(images)
    assert np.all(np.sum(on_gpu * on_cpu, axis=1) > 0.99)  # fp16 autocast and nvJPEG vs fp32 and Pillow


def test_a_real_out_of_memory_error_halves_the_batch_and_loses_nothing() -> None:
    free, _ = torch.cuda.mem_get_info()
    per_input = free // 3  # a batch of 4 cannot fit, a batch of 2 can

    def encode(inputs: list[int]) -> np.ndarray:
        activations = torch.empty(len(inputs) * per_input, dtype=torch.uint8, device=CUDA)
        activations.fill_(1)
        return np.asarray(inputs, dtype=np.float32).reshape(-1, 1)

    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    sizer = BatchSizer(8, maximum=8, grow=False)
    out = sizer.encode(encode, list(range(11)))
    assert out.ravel().tolist() == list(range(11)) and sizer.backoffs >= 1 and sizer.size <= 2
    assert torch.cuda.memory_allocated() == before


@needs_faiss_gpu
def test_the_large_space_tier_reaches_the_gpu() -> None:
    rng = np.random.default_rng(0)
    vectors = l2_normalise(rng.normal(size=(20_000, 256)))
    inner = faiss.index_factory(256, "IVF64,PQ64", faiss.METRIC_INNER_PRODUCT)  # the tier's 64 code bytes
    inner.do_polysemous_training = False  # minutes on the CPU, and unused by the search
    inner.train(vectors)
    index = faiss.IndexIDMap2(inner)
    index.add_with_ids(vectors, np.arange(len(vectors)))
    replica = GpuReplica()
    found = replica.search(index, 1, SearchTuning(nprobe=16), vectors[:100], 10)
    assert found is not None and not replica._unusable  # float16 look-up tables: the PQ64 copy is accepted
    assert float(np.mean(found[1][:, 0] == np.arange(100))) > 0.8
    assert replica.search(index, 1, SearchTuning(nprobe=16), vectors[:4], GPU_MAX_K + 1) is None  # CPU answers


@needs_faiss_gpu
def test_gpu_training_does_not_leak_gpu_memory() -> None:
    rng = np.random.default_rng(1)
    vectors = l2_normalise(rng.normal(size=(20_000, 64)))
    plan = IndexPlan(IndexKind.IVFPQ, "IVF256,PQ16", 32)
    empty_index(plan, 64, IndexPolicy(), vectors)
    free_after_first, _ = torch.cuda.mem_get_info()
    for _ in range(3):
        empty_index(plan, 64, IndexPolicy(), vectors)
    free_after_more, _ = torch.cuda.mem_get_info()
    assert free_after_first - free_after_more < 256 * 2**20  # each StandardGpuResources reserves far more
