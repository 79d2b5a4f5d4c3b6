"""clip-retrieval 2.45.0's back end (the peer harness in ``/work/shared/peers/clip-retrieval``) over our vectors.

The peer's index is built by its own ``clip-retrieval index`` (autofaiss) from the very vectors xmodal's ``clip``
space holds for the same images (same random ViT-B-32), so both servers answer over the same data; its back
serves them as ``synth_ids`` (hdf5 metadata, hits carry id and similarity only), started as the harness starts
it: loopback only, the same checkpoint, mclip and aesthetic options off, ``use_jit`` at its default.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from xmodal.engine import Engine

INDEX = "synth_ids"


def export_vectors(engine: Engine, folder: Path) -> int:
    """The ``clip`` space's vectors as clip-retrieval's embeddings folder (``img_emb/``, ``metadata/``)."""
    space = engine.spaces["clip"]
    index = space.stored_index()
    if index is None:
        raise SystemExit("the xmodal home has no clip index to hand to the peer")
    ids = np.asarray(sorted(engine.catalog.vector_ids("clip")), dtype=np.int64)
    vectors = index.reconstruct(ids).astype(np.float16)  # what clip-retrieval inference writes
    owners = engine.catalog.resolve_vectors(ids.tolist())
    items = engine.catalog.get_items([hit.item_id for hit in owners.values()])
    (folder / "img_emb").mkdir(parents=True, exist_ok=True)
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    np.save(folder / "img_emb" / "img_emb_0.npy", vectors)
    paths = [items[owners[int(i)].item_id].path for i in ids]
    (folder / "paths.json").write_text(json.dumps(paths))
    return len(ids)


def build_index(venv: Path, harness: Path, embeddings: Path, index: Path, log: Path) -> None:
    """``clip-retrieval index`` (the peer's defaults) over an exported embeddings folder."""
    python = venv / "bin" / "python"
    to_parquet = (
        "import json, sys, pandas; paths = json.load(open(sys.argv[1]));"
        "pandas.DataFrame({'image_path': paths}).to_parquet(sys.argv[2])"
    )
    metadata = embeddings / "metadata" / "metadata_0.parquet"
    subprocess.run([python, "-c", to_parquet, embeddings / "paths.json", metadata], check=True)
    command = [venv / "bin" / "clip-retrieval", "index", "--embeddings_folder", embeddings, "--index_folder", index]
    with log.open("w") as out:
        subprocess.run(command, check=True, stdout=out, stderr=subprocess.STDOUT, env=_peer_env(harness))


def _peer_env(harness: Path) -> dict[str, str]:
    """The harness's environment for every peer process: offline, quiet, its opt-in patch (denormals, loopback)."""
    return {
        **os.environ,
        "PYTHONPATH": str(harness / "peer_patch"),
        "CRB_PEER_PATCH": "1",
        "CRB_FLUSH_DENORMAL": "1",
        "CRB_LOOPBACK_ONLY": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "WANDB_SILENT": "true",
        "PYTHONWARNINGS": "ignore",
        "TOKENIZERS_PARALLELISM": "false",
    }


@contextlib.contextmanager
def serve(venv: Path, index: Path, checkpoint: Path, port: int, log: Path, harness: Path) -> Iterator[int]:
    """Run ``clip-retrieval back`` on 127.0.0.1:``port`` for the block; yields its pid."""
    paths = log.parent / "indices_paths.json"
    paths.write_text(json.dumps({INDEX: {"indice_folder": str(index), "columns_to_return": ["caption"],
                                         "enable_hdf5": True}}))  # fmt: skip
    command = [
        venv / "bin" / "clip-retrieval", "back", "--indices_paths", paths, "--port", str(port),
        "--clip_model", f"open_clip:ViT-B-32/{checkpoint}", "--enable_mclip_option", "False",
        "--provide_aesthetic_embeddings", "False", "--use_jit", "True",
    ]  # fmt: skip
    with log.open("w") as out:
        server = subprocess.Popen(
            command, env=_peer_env(harness), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield server.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)  # the back and only what it started, by its own group id
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
