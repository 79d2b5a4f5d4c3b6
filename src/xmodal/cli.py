"""The ``xmodal`` command: a thin layer that parses arguments, calls the library and prints.

Exit codes: 0 all good; 1 finished, but some files failed (or another runtime error); 2 usage or configuration
error (bad arguments, unknown space, missing weights, a space built by another model); 75 another indexer holds
the home (EX_TEMPFAIL: try again later).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichBar
from rich.table import Table

from xmodal.config import FusionMethod, Settings
from xmodal.engine import Engine
from xmodal.errors import (
    ConfigError,
    IndexLockedError,
    InvalidQueryError,
    NotFoundError,
    SpaceMismatchError,
    WeightsUnavailableError,
    XmodalError,
)
from xmodal.indexer.runner import IndexReport
from xmodal.search.query import QueryPart
from xmodal.search.searcher import SearchResponse

app = typer.Typer(help="Cross-modal search over folders of images, audio and texts.", no_args_is_help=True)
models_app = typer.Typer(help="Pre-fetch and list model weights.", no_args_is_help=True)
spaces_app = typer.Typer(help="Manage vector spaces.", no_args_is_help=True)
app.add_typer(models_app, name="models")
dataset_app = typer.Typer(help="Write evaluation manifests from known datasets.", no_args_is_help=True)
app.add_typer(spaces_app, name="spaces")
app.add_typer(dataset_app, name="dataset")

HomeOption = Annotated[Path | None, typer.Option("--home", help="xmodal home (default: $XMODAL_HOME or ~/.xmodal).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]

EXIT_LOCKED = 75  # EX_TEMPFAIL from sysexits.h: cron and systemd read it as "try again later"
_USAGE_ERRORS = (ConfigError, InvalidQueryError, NotFoundError, SpaceMismatchError, WeightsUnavailableError)


def _settings(home: Path | None, **overrides: object) -> Settings:
    """Settings from the environment, with ``--home`` and other command-line options on top."""
    values = {key: value for key, value in {"home": home, **overrides}.items() if value is not None}
    return Settings(**values)  # type: ignore[arg-type]


def _console() -> Console:
    return Console(stderr=False)


class BarProgress:
    """Draws the progress of an index run (or of an evaluation's queries, ``label``) with rich, on stderr so
    --json output stays clean."""

    def __init__(self, label: str = "indexing") -> None:
        self._label = label
        self._bar = RichBar(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task: int | None = None

    def scanning(self, files_seen: int) -> None:
        if self._task is None:
            self._bar.start()
            self._task = self._bar.add_task("scanning", total=None)
        self._bar.update(self._task, completed=files_seen)

    def start(self, total: int) -> None:
        if self._task is None:
            self._bar.start()
        else:
            self._bar.remove_task(self._task)
        self._task = self._bar.add_task(self._label, total=total)

    def advance(self, count: int) -> None:
        if self._task is not None:
            self._bar.advance(self._task, count)

    def finish(self) -> None:
        self._bar.stop()


def _print_report(console: Console, report: IndexReport) -> None:
    table = Table(title="Index run", show_header=True)
    table.add_column("outcome")
    table.add_column("files", justify="right")
    for label, value in [
        ("scanned", report.scanned),
        ("new", report.indexed),
        ("changed", report.updated),
        ("unchanged", report.unchanged),
        ("skipped (unsupported)", report.skipped),
        ("failed", report.failed),
        ("moved or copied (vectors reused)", report.reused),
        ("pruned (file gone)", report.pruned),
        ("deferred (--max-items)", report.deferred),
        ("vectors added", report.vectors_added),
    ]:
        table.add_row(label, str(value))
    console.print(table)
    timings = ", ".join(f"{name.removesuffix('_s')} {seconds:.1f}s" for name, seconds in report.timings.items())
    console.print(f"time: {timings}")
    for reason, count in report.skipped_reasons.most_common():
        console.print(f"  skipped {count}: {reason}")
    for name, reason in report.spaces_unavailable.items():
        console.print(f"[yellow]space '{name}' was not indexed:[/yellow] {reason}")
    if report.failures:
        # One plain line per file, never folded, so logs can be grepped.
        console.print(f"[red]{len(report.failures)} failed files:[/red]")
        for path, reason in report.failures:
            console.print(f"  {path}: {reason}", highlight=False, soft_wrap=True)


@app.command()
def index(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders to index.")],
    home: HomeOption = None,
    as_json: JsonOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar; print only failures.")] = False,
    prune: Annotated[bool, typer.Option("--prune", help="Forget items whose files are gone.")] = False,
    max_items: Annotated[int | None, typer.Option("--max-items", min=1, help="Process at most this many.")] = None,
    report_file: Annotated[Path | None, typer.Option("--report", help="Write a JSON summary here.")] = None,
    target_recall: Annotated[
        float | None,
        typer.Option(
            "--target-recall", min=0.01, max=1.0, help="Tune approximate indexes to this recall@10 (default 0.95)."
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray",
            flag_value="local",
            help="Decode and encode on Ray: --ray alone starts a local cluster; --ray=ADDRESS joins one "
            "(e.g. auto or ray://head:10001). Needs the distributed extra.",
        ),
    ] = None,
) -> None:
    """Index files and folders: new and changed files are embedded, unchanged ones skipped."""
    console = _console()
    show_bar = not quiet and not as_json and sys.stderr.isatty()
    with Engine.open(settings=_settings(home, index_target_recall=target_recall)) as engine:
        report = engine.index(
            paths,
            progress=BarProgress() if show_bar else None,
            prune=prune,
            max_items=max_items,
            ray_address=ray_address,
        )
    if report_file is not None:
        report_file.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    elif not quiet or report.failures:
        _print_report(console, report)
    raise typer.Exit(1 if report.failed else 0)


@app.command()
def search(
    text: Annotated[str | None, typer.Argument(help="Text query.")] = None,
    texts: Annotated[list[str] | None, typer.Option("--text", help="Another text part (repeatable).")] = None,
    images: Annotated[list[Path] | None, typer.Option("--image", help="Image file to search with.")] = None,
    audios: Annotated[list[Path] | None, typer.Option("--audio", help="Audio file to search with.")] = None,
    negatives: Annotated[list[str] | None, typer.Option("--not", help="Push items matching this text down.")] = None,
    like: Annotated[list[int] | None, typer.Option("--like", help="More like this item id.")] = None,
    where: Annotated[list[str] | None, typer.Option("--where", help="Filter key=value (repeatable).")] = None,
    k: Annotated[int, typer.Option("-k", help="How many results.")] = 10,
    space: Annotated[str | None, typer.Option("--space", help="Search only this space.")] = None,
    modality: Annotated[list[str] | None, typer.Option("--modality", "-m", help="Keep only these.")] = None,
    cursor: Annotated[str | None, typer.Option("--cursor", help="Next page: the cursor printed last.")] = None,
    min_score: Annotated[float | None, typer.Option("--min-score", help="Drop weaker results.")] = None,
    fusion: Annotated[FusionMethod | None, typer.Option("--fusion", help="calibrated or rrf.")] = None,
    diversity: Annotated[float | None, typer.Option("--diversity", help="0 (off) to 1.")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Show each space's contribution.")] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search by texts, images, audio clips and items, with weights, filters and pages."""
    parts = [
        *(QueryPart.text(t) for t in texts or []),
        *(QueryPart.image(p) for p in images or []),
        *(QueryPart.audio(p) for p in audios or []),
        *(QueryPart.text(t, weight=-1.0) for t in negatives or []),
        *(QueryPart.item(i) for i in like or []),
    ]
    with Engine.open(settings=_settings(home)) as engine:
        query = engine.build_query(
            text=text, parts=parts, k=k, modalities=modality, where=where, space=space, cursor=cursor,
            min_score=min_score, explain=explain, fusion=fusion, diversity=diversity,
        )  # fmt: skip
        response = engine.query(query)
    if as_json:
        print(
            json.dumps(
                {
                    "results": [asdict(result) for result in response.results],
                    "spaces_searched": response.spaces_searched,
                    "spaces_unavailable": response.spaces_unavailable,
                    "next_cursor": response.next_cursor,
                },
                indent=2,
            )
        )
        return
    _print_results(_console(), response, explain)


def _print_results(console: Console, response: SearchResponse, explain: bool) -> None:
    table = Table(show_header=True)
    for column in ("#", "score", "id", "modality", "path", "caption / text"):
        table.add_column(column, overflow="fold")
    for rank, result in enumerate(response.results, start=1):
        snippet = result.caption or result.transcript or result.text_excerpt or ""
        if result.time_span is not None:
            snippet = f"[{result.time_span[0]:.1f}-{result.time_span[1]:.1f} s] {snippet}"
        if result.duplicates:
            snippet += f" (+{len(result.duplicates)} near-duplicates)"
        if explain:
            snippet += "".join(
                f"\n  {c.space} {c.part}: {c.raw:.3f} -> {c.contribution:+.2f}" for c in result.explanation
            )
        table.add_row(
            str(rank), f"{result.score:.4f}", str(result.item_id), result.modality or "", result.path, snippet[:400]
        )
    console.print(table)
    if response.next_cursor:
        console.print(f"more: --cursor {response.next_cursor}")
    for name, reason in response.spaces_unavailable.items():
        console.print(f"[yellow]space '{name}' not searched:[/yellow] {reason}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    home: HomeOption = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Server processes; each loads the models (searches are CPU-bound Python).")
    ] = 1,
) -> None:
    """Serve the HTTP API and the search page (OpenAPI docs at /docs)."""
    import uvicorn

    from xmodal.api.app import create_app

    settings = _settings(home)
    if settings.torch_threads is None:  # the encoders of all workers share the machine's cores
        settings = settings.model_copy(update={"torch_threads": max(1, (os.cpu_count() or 1) // workers)})
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port)
        return
    if home is not None:  # worker processes build their settings from the environment
        os.environ["XMODAL_HOME"] = str(home)
    os.environ["XMODAL_TORCH_THREADS"] = str(settings.torch_threads)
    uvicorn.run("xmodal.api.app:create_app", factory=True, host=host, port=port, workers=workers)


@app.command()
def stats(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """What the home holds: items by modality and status, vectors per space."""
    with Engine.open(settings=_settings(home)) as engine:
        info = engine.stats()
    if as_json:
        print(json.dumps(asdict(info), indent=2))
        return
    console = _console()
    console.print(f"home: {info.home}\ncatalog: {info.catalog_url}")
    console.print("items: " + (", ".join(f"{k} {v}" for k, v in sorted(info.items_by_modality.items())) or "none"))
    console.print("status: " + (", ".join(f"{k} {v}" for k, v in sorted(info.items_by_status.items())) or "none"))
    table = Table(show_header=True)
    for column in ("space", "encoder", "vectors", "dim", "index", "search effort", "fingerprint"):
        table.add_column(column, overflow="fold")
    for space in info.spaces:
        table.add_row(
            space.name,
            space.encoder_spec,
            str(space.vectors) + (f" (+{space.tombstones} removed)" if space.tombstones else ""),
            str(space.dim or ""),
            space.index,
            _effort(space.search_effort),
            space.fingerprint or "",
        )
    console.print(table)


def _effort(tuning: dict[str, float | int | None]) -> str:
    knob = next((f"{name}={tuning[name]}" for name in ("ef_search", "nprobe") if tuning.get(name)), "exact")
    recall = tuning.get("measured_recall")
    return knob if recall is None or knob == "exact" else f"{knob} (recall@10 {recall:.3f})"


@models_app.command("pull")
def models_pull(
    specs: Annotated[list[str] | None, typer.Argument(help="Encoder specs (default: every configured one).")] = None,
    home: HomeOption = None,
) -> None:
    """Download model weights into the cache now, so indexing and serving need no network."""
    from xmodal.encoders.weights import pull

    settings = _settings(home)
    console = _console()
    for spec in specs or list(settings.space_encoders().values()):
        console.print(f"pulling {spec} ...")
        console.print(f"  ready (fingerprint {pull(spec, settings)}) in {settings.models_dir}")


@models_app.command("list")
def models_list(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Models in the cache, and the encoders each space is configured with."""
    from xmodal.encoders.weights import list_cached

    settings = _settings(home)
    cached = list_cached(settings)
    if as_json:
        print(json.dumps({"cache": str(settings.models_dir), "models": [asdict(m) for m in cached]}, indent=2))
        return
    console = _console()
    console.print(f"cache: {settings.models_dir}")
    for name, spec in settings.space_encoders().items():
        console.print(f"space {name}: {spec}")
    table = Table(show_header=True)
    for column in ("repository", "size (MB)", "files"):
        table.add_column(column)
    for model in cached:
        table.add_row(model.repo, f"{model.size_bytes / 1e6:.1f}", str(model.files))
    console.print(table if cached else "no downloaded models in the cache")


@spaces_app.command("drop")
def spaces_drop(
    name: Annotated[str, typer.Argument(help="Space to empty.")],
    home: HomeOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a space's vectors, e.g. to re-index it with another model."""
    if not yes:
        typer.confirm(f"Delete every vector of space '{name}'?", abort=True)
    with Engine.open(settings=_settings(home)) as engine:
        dropped = engine.drop_space(name)
    _console().print(f"space '{name}': {dropped} vectors deleted; the next `xmodal index` embeds them again")


@app.command("eval")
def evaluate(
    manifest: Annotated[Path, typer.Argument(help="Dataset manifest (JSON Lines of items and queries).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for results.json, results.md and the plots.")] = Path(
        "xmodal-eval"
    ),
    home: Annotated[Path | None, typer.Option("--home", help="Home to index into (default: OUT/home).")] = None,
) -> None:
    """Recall@1/5/10, mAP@10 and nDCG@10 of every direction the manifest has: fused search, each space through its
    index and by brute force, and BM25."""
    from xmodal.evaluation.manifest import Manifest
    from xmodal.evaluation.report import markdown, write_all
    from xmodal.evaluation.runner import evaluate as run_evaluation

    dataset = Manifest.load(manifest)
    console = _console()
    show_bar = sys.stderr.isatty()
    with Engine.open(settings=_settings(home or out / "home")) as engine:
        report = run_evaluation(
            engine,
            dataset,
            out / "items",
            progress=BarProgress("queries") if show_bar else None,
            index_progress=BarProgress() if show_bar else None,
        )
        settings = engine.settings
    written = write_all(
        report,
        out,
        {"manifest": str(manifest.resolve()), "encoders": settings.space_encoders(), "fusion": settings.fusion},
    )
    console.print(markdown(report), highlight=False, soft_wrap=True)
    console.print("wrote " + ", ".join(str(path) for path in written))


@dataset_app.command("tuxpaint")
def dataset_tuxpaint(
    manifest: Annotated[Path, typer.Argument(help="Manifest to write.")],
    stamps: Annotated[Path, typer.Option("--stamps", help="Tux Paint's stamps folder.")] = Path(
        "/usr/share/tuxpaint/stamps"
    ),
    tasks: Annotated[list[str] | None, typer.Option("--task", help="images, readings or effects (repeatable).")] = None,
) -> None:
    """Tux Paint stamps: captions <-> images, captions <-> spoken readings, captions <-> sound effects."""
    from xmodal.evaluation.converters import TUXPAINT_TASKS, tuxpaint

    _write_dataset(manifest, *tuxpaint(stamps, tasks or TUXPAINT_TASKS))


@dataset_app.command("skimage")
def dataset_skimage(
    manifest: Annotated[Path, typer.Argument(help="Manifest to write; the photos go into a folder beside it.")],
) -> None:
    """scikit-image's sample photos with their docstring captions."""
    from xmodal.evaluation.converters import skimage_photos

    _write_dataset(manifest, *skimage_photos(manifest.parent / f"{manifest.stem}-photos"))


@dataset_app.command("karpathy")
def dataset_karpathy(
    dataset_json: Annotated[Path, typer.Argument(help="dataset_flickr30k.json or dataset_coco.json.")],
    manifest: Annotated[Path, typer.Argument(help="Manifest to write.")],
    images: Annotated[Path, typer.Option("--images", help="Folder holding the dataset's images.")],
    split: Annotated[str, typer.Option("--split", help="train, val, restval or test.")] = "test",
) -> None:
    """Flickr30k or MSCOCO in Karpathy's split JSON: captions <-> images of one split."""
    from xmodal.evaluation.converters import karpathy

    _write_dataset(manifest, *karpathy(dataset_json, images, split))


def _write_dataset(manifest: Path, items: list, queries: list) -> None:  # type: ignore[type-arg]
    from xmodal.evaluation.manifest import write_manifest

    write_manifest(manifest, items, queries)
    _console().print(f"wrote {manifest}: {len(items)} items, {len(queries)} queries")


def _quiet_model_loading() -> None:
    """Model libraries draw their own progress bars and log chatter while loading; the CLI has its own output."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    logging.getLogger().setLevel(logging.WARNING)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log line, for log collectors (``XMODAL_LOG_FORMAT=json``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _configure_logging() -> None:
    handler = logging.StreamHandler()
    if os.environ.get("XMODAL_LOG_FORMAT", "text").lower() == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)


def main() -> None:
    """Console entry point: runs the app and turns xmodal errors into a message and an exit code."""
    _configure_logging()
    _quiet_model_loading()
    try:
        app()
    except IndexLockedError as exc:
        Console(stderr=True).print(f"[yellow]locked:[/yellow] {exc}", highlight=False)
        sys.exit(EXIT_LOCKED)
    except XmodalError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(2 if isinstance(exc, _USAGE_ERRORS) else 1)
