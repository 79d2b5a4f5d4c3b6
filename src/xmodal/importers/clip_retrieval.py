"""``xmodal import clip-retrieval DIR``: a clip-retrieval output folder into the catalog and one space, as is.

clip-retrieval 2.45.0's ``inference`` writes, per partition ``N`` (zero-padded, see its
``clip_inference/writer.py``)::

    DIR/img_emb/img_emb_N.npy              float16 rows, L2-normalised image embeddings
    DIR/text_emb/text_emb_N.npy            the same for the captions
    DIR/metadata/metadata_N.parquet        one row per sample: image_path, caption, and the sample's own
                                           metadata columns (url, width, ...), in the order of the rows above

and its ``index`` writes ``DIR/image.index`` (a FAISS index over the image embeddings, ids = row numbers over the
partitions in order) beside a copy of ``metadata/``. Its back end numbers results by that row order; xmodal keeps
it as each item's ``clip_retrieval_id`` metadata.

Each row becomes one item: an image item with its image embedding (a text item with its text embedding when the
folder holds text embeddings only). The image file is served when ``files`` is given and ``image_path`` names a
file inside it; otherwise an item with a ``url`` is served by redirecting to that URL (URL-only items); rows with
neither are skipped. Without embedding files, the vectors are read back from ``image.index`` (exact for flat
indexes; a compressed one gives its approximations). The space takes the encoder spec the embeddings were made
with, so text queries are encoded by that model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import mimetypes
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.errors import ConfigError, NotFoundError
from xmodal.modality import Modality
from xmodal.spaces import SpaceSet, VectorSpace
from xmodal.store.catalog import Catalog, ItemRecord, NewEmbedding, WriteRequest
from xmodal.store.versions import VersionPointer, read_pointer, write_pointer

log = logging.getLogger(__name__)

BATCH = 1000  # rows per catalog transaction
_PARTITION = re.compile(r"_(\d+)\.(?:npy|parquet)$")
_OWN_COLUMNS = ("image_path", "caption")


@dataclass(frozen=True, slots=True)
class ClipRetrievalFolder:
    """The files of one clip-retrieval output folder, partitions in order."""

    root: Path
    metadata: tuple[Path, ...]
    image_embeddings: tuple[Path, ...] = ()
    text_embeddings: tuple[Path, ...] = ()
    image_index: Path | None = None

    @classmethod
    def open(cls, root: Path) -> ClipRetrievalFolder:
        """Find the partitions under ``root``; ``NotFoundError`` or ``ConfigError`` if it is not such a folder."""
        if not root.is_dir():
            raise NotFoundError(f"No clip-retrieval folder at {root}.")
        metadata = _partitions(root / "metadata", "metadata_*.parquet")
        images = _partitions(root / "img_emb", "img_emb_*.npy")
        texts = _partitions(root / "text_emb", "text_emb_*.npy")
        index = root / "image.index"
        if index.is_dir():  # an index merged on disk: the folder holds populated.index
            index = index / "populated.index"
        found = cls(root, metadata, images, texts, index if index.is_file() else None)
        if not metadata:
            raise ConfigError(f"{root} has no metadata/metadata_*.parquet: not a clip-retrieval output folder.")
        for name, files in (("img_emb", images), ("text_emb", texts)):
            if files and [_number(p) for p in files] != [_number(p) for p in metadata]:
                raise ConfigError(f"{root}: the {name} partitions do not match the metadata partitions.")
        if not (images or texts or found.image_index):
            raise ConfigError(f"{root} has neither img_emb/, text_emb/ nor image.index: no embeddings to import.")
        return found

    @property
    def modality(self) -> Modality:
        return (
            Modality.TEXT
            if not self.image_embeddings and self.image_index is None and self.text_embeddings
            else (Modality.IMAGE)
        )

    def partitions(self) -> Iterator[tuple[list[dict[str, Any]], np.ndarray]]:
        """(metadata rows, their embeddings as float32) per partition, in clip-retrieval's row order."""
        import pyarrow.parquet as pq

        from_index = self._index_vectors() if not self.image_embeddings and self.image_index is not None else None
        offset = 0
        for position, metadata_file in enumerate(self.metadata):
            rows = pq.read_table(metadata_file).to_pylist()
            if from_index is not None:
                vectors = from_index[offset : offset + len(rows)]
            else:
                files = self.image_embeddings or self.text_embeddings
                vectors = np.load(files[position]).astype(np.float32)
            if len(vectors) != len(rows):
                raise ConfigError(
                    f"{metadata_file.name} has {len(rows)} rows but its embeddings have {len(vectors)}: "
                    "the folder is incomplete."
                )
            yield rows, vectors
            offset += len(rows)

    def _index_vectors(self) -> np.ndarray:
        import faiss

        assert self.image_index is not None
        index = faiss.read_index(str(self.image_index))
        with contextlib.suppress(RuntimeError):  # not an IVF index: it reconstructs without a map
            faiss.extract_index_ivf(index).make_direct_map()
        return np.asarray(index.reconstruct_n(0, index.ntotal), dtype=np.float32)


@dataclass
class ImportReport:
    """What an import brought in."""

    space: str
    encoder_spec: str
    items: int = 0
    vectors: int = 0
    local_files: int = 0  # items whose file is served from the ``files`` folder
    url_only: int = 0  # items served by their URL
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (clip-retrieval id, why), the first 100
    skipped_count: int = 0


def import_folder(
    folder: ClipRetrievalFolder,
    *,
    catalog: Catalog,
    spaces: SpaceSet,
    space: str,
    encoder_spec: str,
    files: Path | None = None,
    checkpoint_every: int = 2048,
) -> ImportReport:
    """Import ``folder`` into ``space`` as vectors of ``encoder_spec``; the caller holds the writer lock."""
    target = _target_space(spaces, space, encoder_spec)
    writer = target.writer()  # loads the model: its fingerprint marks the vectors, text queries use it
    report = ImportReport(space, encoder_spec)
    files = files.resolve() if files is not None else None
    modality = folder.modality
    since_save = 0
    position = 0
    for rows, vectors in folder.partitions():
        if vectors.shape[1] != writer.manifest.dim:
            raise ConfigError(
                f"The embeddings have {vectors.shape[1]} dimensions; {encoder_spec} makes {writer.manifest.dim}: "
                "give the model they were made with (--model)."
            )
        for start in range(0, len(rows), BATCH):
            requests: list[WriteRequest] = []
            kept: list[int] = []
            for offset, row in enumerate(rows[start : start + BATCH]):
                record = _record(folder, row, position + start + offset, modality, files, report)
                if record is None:
                    continue
                body = record.caption if modality is Modality.TEXT else None
                requests.append(WriteRequest(record, {target.key: [NewEmbedding()]}, body))
                kept.append(start + offset)
            if not requests:
                continue
            new_ids, _ = catalog.write_items(requests)
            ids = new_ids.get(target.key, [])
            writer.add(np.asarray(ids, dtype=np.int64), vectors[kept])
            report.items += len(requests)
            report.vectors += len(ids)
            since_save += len(requests)
            if since_save >= checkpoint_every:
                target.save()
                since_save = 0
        position += len(rows)
    target.save(final=True, apply_queued=True)
    log.info("imported %d items of %s into space %s", report.items, folder.root, space)
    return report


def _target_space(spaces: SpaceSet, name: str, encoder_spec: str) -> VectorSpace:
    """The space to import into, made to use ``encoder_spec`` if it is empty; refused if it holds another model's
    vectors."""
    if name not in spaces:
        raise NotFoundError(f"No space named '{name}'. Spaces: {', '.join(spaces.names())}.")
    space = spaces[name]
    if space.encoder.spec == encoder_spec:
        return space
    space_dir = spaces.factory.space_dir(name)
    pointer = read_pointer(space_dir)
    if space.size or (pointer is not None and len(pointer.versions) > 1):
        raise ConfigError(
            f"Space '{name}' holds vectors of {space.encoder.spec}, not {encoder_spec}: import into an empty space "
            f"(xmodal spaces drop {name}), or switch it first (xmodal spaces switch {name} --to {encoder_spec})."
        )
    write_pointer(space_dir, VersionPointer.initial(name, encoder_spec))  # the space's model from now on
    spaces.reset(name)
    return spaces[name]


def _record(
    folder: ClipRetrievalFolder,
    row: dict[str, Any],
    position: int,
    modality: Modality,
    files: Path | None,
    report: ImportReport,
) -> ItemRecord | None:
    caption = row.get("caption") or None
    metadata = {k: _jsonable(v) for k, v in row.items() if k not in _OWN_COLUMNS}
    metadata["clip_retrieval_id"] = position
    image_path = row.get("image_path") or None
    if image_path is not None:
        metadata["image_path"] = image_path
    local = _local_file(files, image_path)
    url = row.get("url")
    fields: dict[str, Any] = {"modality": modality, "caption": caption, "user_metadata": metadata}
    if modality is Modality.TEXT:
        fields = {**fields, "caption": None, "text_excerpt": (caption or "")[:400] or None}
    if local is not None:
        stat = local.stat()
        report.local_files += 1
        media_type = mimetypes.guess_type(local.name)[0]
        source = files.as_uri()  # type: ignore[union-attr]  # a local file was found in it
        return ItemRecord(str(local), source, stat.st_size, stat.st_mtime_ns, media_type=media_type, **fields)
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        report.url_only += 1
        media_type = mimetypes.guess_type(url.split("?", 1)[0])[0]
        return ItemRecord(url, folder.root.as_uri(), 0, 0, media_type=media_type, **fields)
    report.skipped_count += 1
    if len(report.skipped) < 100:
        report.skipped.append((position, "no file under --files and no http(s) url"))
    return None


def _local_file(files: Path | None, image_path: str | None) -> Path | None:
    """``image_path`` as a file inside ``files`` (relative paths are taken from it), if it is one."""
    if files is None or image_path is None:
        return None
    candidate = Path(image_path)
    resolved = (candidate if candidate.is_absolute() else files / candidate).resolve()
    if not resolved.is_relative_to(files) or not resolved.is_file():
        return None
    return resolved


def _jsonable(value: Any) -> Any:
    """A parquet value as the catalog's JSON keeps it (NaN, which PostgreSQL's JSON refuses, as null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def _partitions(folder: Path, pattern: str) -> tuple[Path, ...]:
    return tuple(sorted(folder.glob(pattern), key=_number)) if folder.is_dir() else ()


def _number(path: Path) -> int:
    match = _PARTITION.search(path.name)
    return int(match.group(1)) if match else -1
