"""Decode and encode on a Ray cluster; the driver commits what comes back, exactly as a local run does.

Ray Data spreads the files over a pool of actors (GPU actors when the cluster has GPUs). Each actor builds its
own encoders once, from the settings, and turns a batch of files into an encoded batch: the files' catalog records
and their vectors, without the decoded media. WebDataset shards that must be read go to the actors one task per
shard: the actor reads its shard once, sequentially, and encodes its samples (leaving out those the driver says
are indexed already), so a shard set is read by the workers in parallel, never by the driver. The driver takes
the batches as they complete and commits each one
with :func:`~xmodal.indexer.write.write_batch`, so the catalog and the indexes keep the guarantees of a local run
(batched commits, checkpointed indexes, reconciliation after a crash). Files with the bytes of an indexed file
are recognised on the driver, which holds the catalog, and keep that file's vectors.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.config import Settings
from xmodal.encoders import build_encoder
from xmodal.encoders.batching import BatchSizers
from xmodal.encoders.speech import Transcriber
from xmodal.errors import ConfigError
from xmodal.indexer.embed import FileVectors, embed_batch
from xmodal.indexer.reader import DecodedFile, Preparers, ReadLimits, precheck, read_file
from xmodal.indexer.sources import SourceFile
from xmodal.indexer.webdataset import Shard, detached, extract_shard
from xmodal.modality import Modality
from xmodal.spaces import VectorSpace

log = logging.getLogger(__name__)

EncodedBatch = list[tuple[DecodedFile, dict[str, FileVectors]]]


@dataclass(frozen=True, slots=True)
class ShardTask:
    """One shard for a worker, with the samples the catalog holds already: sample -> the version they were
    indexed at (a sample read at that same version, with vectors in every space, is not decoded again)."""

    shard: Shard
    indexed: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ShardOutcome:
    """What a worker made of one shard: every sample it holds, those it left alone (indexed already at this
    version), the encoded rest, or why the shard could not be read."""

    shard: Shard
    samples: list[str]
    unchanged: list[str]
    encoded: EncodedBatch
    error: str | None = None
    worker_pid: int = 0


class ShardEncoder:
    """A Ray Data actor: decodes and encodes batches of files into encoded batches (built once per actor)."""

    def __init__(self, settings_json: str, space_names: Sequence[str], limits: ReadLimits, transcribe: bool) -> None:
        settings = Settings.model_validate_json(settings_json)
        encoders = {name: build_encoder(settings.space_encoders()[name], settings) for name in space_names}
        # The spaces here only carry encoders: actors never touch the catalog or the indexes.
        self.spaces = [VectorSpace(name, encoder, Path(), None) for name, encoder in encoders.items()]  # type: ignore[arg-type]
        transcriber = Transcriber.from_settings(settings) if transcribe else None
        self.preparers = Preparers(
            images={s.name: s.encoder.prepare_image for s in self.spaces if s.embeds(Modality.IMAGE)},
            jpegs={s.name: s.encoder.prepare_jpeg for s in self.spaces if s.embeds(Modality.IMAGE)},
            audio={s.name: s.encoder.prepare_audio for s in self.spaces if s.embeds(Modality.AUDIO)},
            transcriber=transcriber,
        )
        self.limits = limits
        self.sizers = BatchSizers.for_settings(settings)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sources: list[SourceFile] = [pickle.loads(blob) for blob in batch["source"]]
        decoded = [read_file(source, self.limits, self.preparers) for source in sources]
        return {"encoded": np.array([pickle.dumps(self.encode(decoded))], dtype=object)}

    def encode(self, decoded: list[DecodedFile]) -> EncodedBatch:
        """The vectors of the decoded files, each with its record (the decoded media dropped)."""
        vectors = embed_batch([d for d in decoded if d.record is not None], self.spaces, sizers=self.sizers)
        by_file = iter(vectors)
        return [
            (dataclasses.replace(d, prepared_images={}, prepared_audio={}), next(by_file) if d.record else {})
            for d in decoded
        ]


class ShardSetEncoder(ShardEncoder):
    """A Ray Data actor that reads whole WebDataset shards (one per call) and encodes their samples."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outcomes = [pickle.dumps(self.read(pickle.loads(blob))) for blob in batch["task"]]
        return {"outcome": np.array(outcomes, dtype=object)}

    def read(self, task: ShardTask) -> ShardOutcome:
        with tempfile.TemporaryDirectory(prefix="xmodal-shard-") as scratch:
            try:
                samples = extract_shard(task.shard, Path(scratch), self.limits.text_extensions)
            except Exception as exc:  # a truncated or corrupt tar: nothing of it is indexed, nothing of it pruned
                reason = f"cannot read shard {task.shard}: {type(exc).__name__}: {exc}"
                return ShardOutcome(task.shard, [], [], [], error=reason, worker_pid=os.getpid())
            fresh = [s for s in samples if task.indexed.get(str(s.path), "") != s.version]
            encoded: EncodedBatch = []
            for start in range(0, len(fresh), self.sizers.size):
                chunk = fresh[start : start + self.sizers.size]
                decoded = [precheck(s, self.limits) or read_file(s, self.limits, self.preparers) for s in chunk]
                encoded.extend(self.encode(decoded))
        encoded = [(dataclasses.replace(d, source=detached(d.source)), v) for d, v in encoded]
        unchanged = [str(s.path) for s in samples if task.indexed.get(str(s.path), "") == s.version]
        return ShardOutcome(task.shard, [str(s.path) for s in samples], unchanged, encoded, worker_pid=os.getpid())


def _connect(address: str, settings: Settings) -> tuple[int, int]:
    """Join (or, for ``local``, start) the cluster; returns (actors to run, GPUs in the cluster)."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ConfigError("`--ray` needs Ray Data: pip install 'xmodal[distributed]'") from exc
    if not ray.is_initialized():
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
    resources: dict[str, Any] = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", 1)))
    ray.data.DataContext.get_current().enable_progress_bars = False
    return settings.ray_workers or (gpus if gpus else max(1, cpus - 1)), gpus


def encode_on_ray(
    address: str,
    settings: Settings,
    todo: Sequence[SourceFile],
    active: Sequence[VectorSpace],
    limits: ReadLimits,
    *,
    transcribe: bool,
) -> Iterator[EncodedBatch]:
    """Encoded batches of ``todo``, in completion order, from a Ray cluster (``address``: ``local`` starts one
    here)."""
    workers, gpus = _connect(address, settings)
    import ray.data

    log.info("ray: %d files over %d actors (%d GPUs in the cluster)", len(todo), workers, gpus)
    dataset = ray.data.from_items(
        [{"source": pickle.dumps(source)} for source in todo],
        override_num_blocks=max(1, min(len(todo), workers * 4)),
    ).map_batches(
        ShardEncoder,
        fn_constructor_args=(
            settings.model_dump_json(),
            [space.name for space in active],
            limits,
            transcribe,
        ),
        batch_size=settings.batch_size,
        batch_format="numpy",
        concurrency=workers,
        num_gpus=1 if gpus else 0,
        num_cpus=1,
    )
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
        for blob in batch["encoded"]:
            yield pickle.loads(blob)


def encode_shards_on_ray(
    address: str,
    settings: Settings,
    tasks: Sequence[ShardTask],
    active: Sequence[VectorSpace],
    limits: ReadLimits,
    *,
    transcribe: bool,
) -> Iterator[ShardOutcome]:
    """One outcome per shard task, in completion order: each shard is read and encoded by one actor."""
    workers, gpus = _connect(address, settings)
    import ray.data

    workers = max(1, min(workers, len(tasks)))
    log.info("ray: %d shards over %d actors (%d GPUs in the cluster)", len(tasks), workers, gpus)
    dataset = ray.data.from_items(
        [{"task": pickle.dumps(task)} for task in tasks], override_num_blocks=max(1, len(tasks))
    ).map_batches(
        ShardSetEncoder,
        fn_constructor_args=(settings.model_dump_json(), [space.name for space in active], limits, transcribe),
        batch_size=1,  # one shard per call
        batch_format="numpy",
        concurrency=workers,
        num_gpus=1 if gpus else 0,
        num_cpus=1,
    )
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
        for blob in batch["outcome"]:
            yield pickle.loads(blob)
