"""Decode and encode on a Ray cluster; the driver commits what comes back, exactly as a local run does.

Ray Data spreads the files over a pool of actors (GPU actors when the cluster has GPUs). Each actor builds its
own encoders once, from the settings, and turns a batch of files into a shard: the files' catalog records and
their vectors, without the decoded media. The driver takes the shards as they complete and commits each one
with :func:`~xmodal.indexer.write.write_batch`, so the catalog and the indexes keep the guarantees of a local run
(batched commits, checkpointed indexes, reconciliation after a crash). Files with the bytes of an indexed file
are recognised on the driver, which holds the catalog, and keep that file's vectors.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.config import Settings
from xmodal.encoders import build_encoder
from xmodal.encoders.batching import BatchSizers
from xmodal.encoders.speech import Transcriber
from xmodal.errors import ConfigError
from xmodal.indexer.embed import FileVectors, embed_batch
from xmodal.indexer.reader import DecodedFile, Preparers, ReadLimits, read_file
from xmodal.indexer.sources import SourceFile
from xmodal.modality import Modality
from xmodal.spaces import VectorSpace

log = logging.getLogger(__name__)

Shard = list[tuple[DecodedFile, dict[str, FileVectors]]]


class ShardEncoder:
    """A Ray Data actor: decodes and encodes batches of files into shards (built once per actor)."""

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
        vectors = embed_batch([d for d in decoded if d.record is not None], self.spaces, sizers=self.sizers)
        by_file = iter(vectors)
        shard: Shard = [
            (dataclasses.replace(d, prepared_images={}, prepared_audio={}), next(by_file) if d.record else {})
            for d in decoded
        ]
        return {"shard": np.array([pickle.dumps(shard)], dtype=object)}


def encode_on_ray(
    address: str,
    settings: Settings,
    todo: Sequence[SourceFile],
    active: Sequence[VectorSpace],
    limits: ReadLimits,
    *,
    transcribe: bool,
) -> Iterator[Shard]:
    """Shards for ``todo``, in completion order, from a Ray cluster (``address``: ``local`` starts one here)."""
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
    workers = settings.ray_workers or (gpus if gpus else max(1, cpus - 1))
    log.info("ray: %d files over %d actors (%d GPUs, %d CPUs in the cluster)", len(todo), workers, gpus, cpus)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
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
        for blob in batch["shard"]:
            yield pickle.loads(blob)
