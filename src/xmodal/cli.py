"""The ``xmodal`` command: a thin layer that parses arguments, calls the library and prints.

Exit codes: 0 all good; 1 finished, but some files failed (or another runtime error); 2 usage or configuration
error (bad arguments, unknown space, missing weights, a space built by another model); 75 another indexer holds
the home (EX_TEMPFAIL: try again later).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichBar
from rich.table import Table
from rich.text import Text

from xmodal.config import FusionMethod, Settings
from xmodal.errors import (
    ConfigError,
    IndexLockedError,
    InvalidQueryError,
    NotFoundError,
    SpaceMismatchError,
    WeightsUnavailableError,
    XmodalError,
)

if TYPE_CHECKING:  # the engine (and the model libraries behind it) load only in the commands that use them
    from xmodal.engine import Engine
    from xmodal.indexer.runner import IndexReport
    from xmodal.switching import SwitchState

app = typer.Typer(help="Cross-modal search over folders of images, audio and texts.", no_args_is_help=True)
models_app = typer.Typer(help="Pre-fetch and list model weights.", no_args_is_help=True)
spaces_app = typer.Typer(help="Manage vector spaces.", no_args_is_help=True)
app.add_typer(models_app, name="models")
dataset_app = typer.Typer(help="Write evaluation manifests from known datasets.", no_args_is_help=True)
app.add_typer(spaces_app, name="spaces")
app.add_typer(dataset_app, name="dataset")
import_app = typer.Typer(help="Bring in embeddings made by other tools, without embedding again.", no_args_is_help=True)
app.add_typer(import_app, name="import")

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


def _open(settings: Settings, *, existing: bool) -> Engine:
    """The engine of the settings' home; ``existing``: refuse a home that is not there (a mistyped ``--home``
    must not silently create an empty one)."""
    from xmodal.engine import Engine

    if existing and not settings.home.is_dir():
        raise ConfigError(
            f"No xmodal home at {settings.home}. Check --home or XMODAL_HOME, or create it by indexing: "
            f"xmodal index FOLDER --home {settings.home}"
        )
    return Engine.open(settings=settings)


def short_reason(reason: str) -> str:
    """One line for a space that could not be used: the cause, and the remedy when the weights are missing."""
    first = reason.strip().splitlines()[0] if reason.strip() else reason
    pull = re.search(r"`(xmodal models pull [^`]+)`", reason)
    if pull is None:
        return first
    return f"{first.rstrip('.')}; fix: {pull.group(1)} where there is network, then copy the cache here (see README)"


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"xmodal {version('xmodal')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    """Cross-modal search over folders of images, audio and texts."""


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


def _print_failures(console: Console, report: IndexReport) -> None:
    if report.failures:
        # One plain line per file, never folded, so logs can be grepped.
        console.print(f"[red]{len(report.failures)} failed files:[/red]")
        for path, reason in report.failures:
            console.print(Text(f"  {path}: {reason}"), highlight=False, soft_wrap=True)
    for root, reason in report.prunes_skipped:
        console.print(Text.assemble(("not pruned", "red"), f" {root}: {reason}"), highlight=False, soft_wrap=True)


def timing_line(timings: dict[str, float], decode_workers: int) -> str:
    """Wall-clock stage times, and decode time apart: it is summed over the decode threads, so it can exceed the
    total."""
    wall = {name.removesuffix("_s"): seconds for name, seconds in timings.items() if name != "decode_s"}
    total = wall.pop("total", None)
    parts = [f"{name} {seconds:.1f}s" for name, seconds in wall.items()]
    line = f"time: total {total:.1f}s wall" if total is not None else "time:"
    line += f" ({', '.join(parts)})" if parts else ""
    if "decode_s" in timings:
        line += f"; decode {timings['decode_s']:.1f}s summed over {decode_workers} threads"
    return line


def _print_report(console: Console, report: IndexReport, decode_workers: int) -> None:
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
        ("failed before, unchanged", report.still_failing),
        ("moved or copied (vectors reused)", report.reused),
        ("images read for text (OCR)", report.ocr_read),
        ("... with words found", report.ocr_with_text),
        ("audio files transcribed", report.transcribed),
        ("... not kept (no speech in the model's language)", report.transcripts_dropped),
        ("pruned (file gone)", report.pruned),
        ("deferred (--max-items)", report.deferred),
        ("vectors added", report.vectors_added),
    ]:
        table.add_row(label, str(value))
    console.print(table)
    console.print(timing_line(report.timings, decode_workers), highlight=False, soft_wrap=True)
    for reason, count in report.skipped_reasons.most_common():
        console.print(Text(f"  skipped {count}: {reason}"))
    for name, reason in report.spaces_unavailable.items():
        console.print(f"[yellow]space '{escape(name)}' was not indexed:[/yellow] {escape(short_reason(reason))}")
    for name, shadow in report.shadows.items():
        if shadow.unavailable:
            line = f"space '{name}' new version {shadow.version} not built: {short_reason(shadow.unavailable)}"
        elif shadow.promoted:
            line = f"space '{name}': new version {shadow.version} built ({shadow.embedded} items now) and current"
        else:
            line = f"space '{name}': new version {shadow.version}: {shadow.embedded} items embedded, {shadow.left} left"
        console.print(Text(line + (f" ({shadow.failed} unreadable)" if shadow.failed else "")))
    _print_failures(console, report)


@app.command()
def index(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="Files and folders, bucket prefixes (s3://bucket/prefix, gs://, az://) and WebDataset shards "
            "(a .tar, a glob or a brace pattern such as shards/{000..009}.tar, local or in a bucket)."
        ),
    ],
    home: HomeOption = None,
    as_json: JsonOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar; print only failures.")] = False,
    prune: Annotated[bool, typer.Option("--prune", help="Forget items whose files are gone.")] = False,
    force_prune: Annotated[
        bool, typer.Option("--force-prune", help="Prune even past XMODAL_PRUNE_MAX_FRACTION of a root's items.")
    ] = False,
    max_items: Annotated[int | None, typer.Option("--max-items", min=1, help="Process at most this many.")] = None,
    report_file: Annotated[Path | None, typer.Option("--report", help="Write a JSON summary here.")] = None,
    target_recall: Annotated[
        float | None,
        typer.Option(
            "--target-recall", min=0.01, max=1.0, help="Tune approximate indexes to this recall@10 (default 0.95)."
        ),
    ] = None,
    ray: Annotated[
        bool, typer.Option("--ray", help="Decode and encode on Ray (a local cluster). Needs the distributed extra.")
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address", help="Join this Ray cluster instead (e.g. auto or ray://head:10001); implies --ray."
        ),
    ] = None,
) -> None:
    """Index files, folders, buckets and WebDataset shards: new and changed files are embedded, unchanged ones
    skipped."""
    console = _console()
    show_bar = not quiet and not as_json and sys.stderr.isatty()
    settings = _settings(home, index_target_recall=target_recall)
    with _open(settings, existing=False) as engine:
        report = engine.index(
            paths,
            progress=BarProgress() if show_bar else None,
            prune=prune,
            force_prune=force_prune,
            max_items=max_items,
            ray_address=ray_address or ("local" if ray else None),
            on_plan=None if quiet or as_json else lambda line: Console(stderr=True).print(Text(line), soft_wrap=True),
        )
    if report_file is not None:
        report_file.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    elif quiet:
        _print_failures(console, report)
    else:
        _print_report(console, report, settings.decode_workers)
    raise typer.Exit(0 if report.ok and not report.still_failing else 1)


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
    no_server: Annotated[
        bool,
        typer.Option("--no-server", help="Search in this process even when an `xmodal serve` of the home is running."),
    ] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search by texts, images, audio clips and items, with weights, filters and pages.

    When an `xmodal serve` of the same home runs on this machine, the query goes to it (its models are loaded
    already) and its answer is printed the same way; otherwise, or with --no-server, this process searches."""
    query = SearchArguments(
        text=text, texts=texts or [], images=images or [], audios=audios or [], negatives=negatives or [],
        like=like or [], where=where or [], k=k, space=space, modality=modality or [], cursor=cursor,
        min_score=min_score, fusion=fusion, diversity=diversity, explain=explain,
    )  # fmt: skip
    settings = _settings(home)
    answer = None if no_server else _answer_from_server(settings, query)
    if answer is None:
        answer = _answer_here(settings, query)
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    _print_answer(_console(), answer, explain)


@dataclass(frozen=True, slots=True)
class SearchArguments:
    """``xmodal search``'s query, as typed."""

    text: str | None
    texts: list[str]
    images: list[Path]
    audios: list[Path]
    negatives: list[str]
    like: list[int]
    where: list[str]
    k: int
    space: str | None
    modality: list[str]
    cursor: str | None
    min_score: float | None
    fusion: FusionMethod | None
    diversity: float | None
    explain: bool


def _answer_here(settings: Settings, query: SearchArguments) -> dict[str, object]:
    """Open the home and search it in this process; the answer as ``--json`` prints it."""
    from xmodal.search.query import QueryPart

    parts = [
        *(QueryPart.text(t) for t in query.texts),
        *(QueryPart.image(p) for p in query.images),
        *(QueryPart.audio(p) for p in query.audios),
        *(QueryPart.text(t, weight=-1.0) for t in query.negatives),
        *(QueryPart.item(i) for i in query.like),
    ]
    with _open(settings, existing=True) as engine:
        built = engine.build_query(
            text=query.text, parts=parts, k=query.k, modalities=query.modality or None, where=query.where or None,
            space=query.space, cursor=query.cursor, min_score=query.min_score, explain=query.explain,
            fusion=query.fusion, diversity=query.diversity,
        )  # fmt: skip
        response = engine.query(built)
    return {
        "results": [result_json(asdict(result)) for result in response.results],
        "spaces_searched": response.spaces_searched,
        "spaces_unavailable": response.spaces_unavailable,
        "parts_ignored": response.parts_ignored,
        "next_cursor": response.next_cursor,
    }


def _answer_from_server(settings: Settings, query: SearchArguments) -> dict[str, object] | None:
    """The answer of the running `xmodal serve` of the home, or ``None`` (none runs, it failed, or the query
    cannot be sent as it is): then this process searches, and reports any error of the query itself."""
    from xmodal.api.discovery import running_server

    server = running_server(settings.home)
    if server is None:
        return None
    request = server_request(query)
    if request is None:
        return None
    from xmodal.api.client import as_cli_answer, search_on_server

    key = settings.read_api_key or settings.api_key
    body = search_on_server(
        server.url,
        request,
        api_key=key.get_secret_value() if key is not None else None,
        timeout_s=settings.server_timeout_s,
    )
    return as_cli_answer(body) if body is not None else None


def server_request(query: SearchArguments) -> dict[str, object] | None:
    """The JSON body of ``POST /search`` that asks what ``query`` asks (its parts in the same order, so they
    carry the same labels), or ``None`` when it cannot be said exactly: a filter without ``=`` or a key given
    twice, a score that JSON cannot carry, a media file that cannot be read (the local search explains)."""
    import base64
    import math

    filters: dict[str, str] = {}
    for condition in query.where:
        key, sep, value = condition.partition("=")
        if not sep or key in filters:
            return None
        filters[key] = value
    if query.min_score is not None and not math.isfinite(query.min_score):
        return None
    parts: list[dict[str, object]] = [{"text": t} for t in query.texts]
    try:
        parts += [{"image": base64.b64encode(p.read_bytes()).decode()} for p in query.images]
        parts += [{"audio": base64.b64encode(p.read_bytes()).decode()} for p in query.audios]
    except OSError:
        return None
    parts += [{"text": t, "weight": -1.0} for t in query.negatives]
    parts += [{"item": i} for i in query.like]
    request: dict[str, object] = {"k": query.k, "explain": query.explain, "parts": parts}
    optional = {
        "text": query.text,
        "where": filters or None,
        "space": query.space,
        "modalities": query.modality or None,
        "cursor": query.cursor,
        "min_score": query.min_score,
        "fusion": query.fusion.value if query.fusion is not None else None,
        "diversity": query.diversity,
    }
    request.update({name: value for name, value in optional.items() if value is not None})
    return request


def result_json(result: dict[str, object]) -> dict[str, object]:
    """A result as the HTTP API names its fields (``id``, not ``item_id``)."""
    return {("id" if key == "item_id" else key): value for key, value in result.items()}


def _contribution_line(contribution: dict[str, Any]) -> str:
    origin = f" ({contribution['origin']})" if contribution.get("origin") else ""
    return (
        f"\n  {contribution['space']}{origin} {contribution['part']}: {contribution['raw']:.3f} -> "
        f"{contribution['contribution']:+.2f}"
    )


def _print_answer(console: Console, answer: dict[str, Any], explain: bool) -> None:
    """The results as a table, then the next page's cursor and what could not be used (``answer``: the shape
    ``--json`` prints, from this process or from a server)."""
    table = Table(show_header=True)
    for column in ("#", "score", "id", "modality", "path", "caption / text"):
        table.add_column(column, overflow="fold")
    for rank, result in enumerate(answer["results"], start=1):
        snippet = result.get("caption") or result.get("transcript") or result.get("text_excerpt") or ""
        if result.get("ocr") is not None:
            snippet = f"{snippet} [words in the image: {result['ocr']['text']}]".strip()
        if result.get("time_span") is not None:
            start, end = result["time_span"]
            snippet = f"[{start:.1f}-{end:.1f} s] {snippet}"
        if result.get("duplicates"):
            snippet += f" (+{len(result['duplicates'])} near-duplicates)"
        if explain:
            snippet += "".join(_contribution_line(c) for c in result.get("explanation") or [])
        table.add_row(
            str(rank),
            f"{result['score']:.4f}",
            str(result["id"]),
            result.get("modality") or "",
            Text(result["path"]),  # Text: captions and paths are shown as they are, never read as markup
            Text(snippet[:400]),
        )
    console.print(table)
    if answer.get("next_cursor"):
        console.print(f"more: --cursor {answer['next_cursor']}", highlight=False)
    for name, reason in answer["spaces_unavailable"].items():
        console.print(f"[yellow]space '{escape(name)}' not searched:[/yellow] {escape(short_reason(reason))}")
    for part, reason in answer["parts_ignored"].items():
        console.print(f"[yellow]query part '{escape(part)}' not used:[/yellow] {escape(reason)}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    home: HomeOption = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Server processes; each loads the models (searches are CPU-bound Python).")
    ] = 1,
) -> None:
    """Serve the HTTP API and the search page (OpenAPI docs at /docs).

    While it runs, HOME/server.json says where it listens, so that `xmodal search` on this machine asks it."""
    import uvicorn

    from xmodal.api.app import create_app
    from xmodal.api.discovery import announce, loopback_url

    settings = _settings(home)
    if settings.torch_threads is None:  # the encoders of all workers share the machine's cores
        settings = settings.model_copy(update={"torch_threads": max(1, (os.cpu_count() or 1) // workers)})
    # port 0: the system picks one, which this process does not learn; the server is then not announced
    announced = announce(settings.home, loopback_url(host, port)) if port else contextlib.nullcontext()
    with _cleanup_on_sigterm(), announced:
        if workers == 1:
            uvicorn.run(create_app(settings), host=host, port=port)
            return
        if home is not None:  # worker processes build their settings from the environment
            os.environ["XMODAL_HOME"] = str(home)
        os.environ["XMODAL_TORCH_THREADS"] = str(settings.torch_threads)
        uvicorn.run("xmodal.api.app:create_app", factory=True, host=host, port=port, workers=workers)


class _Terminated(BaseException):
    """SIGTERM arrived: unwinds the stack, so that the blocks it leaves clean up."""


@contextlib.contextmanager
def _cleanup_on_sigterm() -> Iterator[None]:
    """Let SIGTERM (systemd, docker stop) unwind the block before it ends the process as it would have.

    uvicorn shuts down gracefully on SIGTERM and then raises the signal again; by default that kills the process
    before any ``finally`` below it runs, which would leave HOME/server.json behind."""

    def stop(signum: int, _frame: object) -> None:
        raise _Terminated(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)  # the block has cleaned up: now end as the signal asks
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
def stats(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """What the home holds: items by modality and status, vectors per space."""
    with _open(_settings(home), existing=True) as engine:
        info = engine.stats()
    if as_json:
        print(json.dumps(asdict(info), indent=2))
        return
    console = _console()
    console.print(Text(f"home: {info.home}\ncatalog: {info.catalog_url}"))
    console.print("items: " + (", ".join(f"{k} {v}" for k, v in sorted(info.items_by_modality.items())) or "none"))
    console.print("status: " + (", ".join(f"{k} {v}" for k, v in sorted(info.items_by_status.items())) or "none"))
    table = Table(show_header=True)
    for column in ("space", "encoder", "vectors", "dim", "index", "search effort", "fingerprint"):
        table.add_column(column, overflow="fold")
    for space in info.spaces:
        table.add_row(
            Text(space.name),
            Text(space.encoder_spec),
            str(space.vectors) + (f" (+{space.tombstones} removed)" if space.tombstones else ""),
            str(space.dim or ""),
            space.index,
            _effort(space.search_effort),
            space.fingerprint or "",
        )
    console.print(table)
    for space in info.spaces:
        for version in space.versions:
            if version.role == "current" and len(space.versions) == 1:
                continue
            line = f"{space.name} version {version.number} ({version.role}): {version.encoder_spec}, "
            line += f"{version.vectors} vectors" + (f" over {version.items} items" if version.items is not None else "")
            if version.role == "shadow" and space.switch_progress is not None:
                line += f", {space.switch_progress:.0%} of the items built"
            console.print(Text(line))


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
    failed = 0
    for spec in specs or list(settings.space_encoders().values()):
        console.print(Text(f"pulling {spec} ..."))
        try:
            fingerprint = pull(spec, settings)
        except WeightsUnavailableError as exc:  # a network or hub failure: a runtime error (1), not a usage one
            console.print(f"  [red]failed:[/red] {escape(str(exc).splitlines()[0])}")
            failed += 1
            continue
        console.print(Text(f"  ready (fingerprint {fingerprint}) in {settings.models_dir}"))
    raise typer.Exit(1 if failed else 0)


@models_app.command("list")
def models_list(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """The models each space (and speech) uses and whether their weights are at hand, and what the cache holds."""
    from xmodal.encoders.weights import list_cached, models_in_use

    settings = _settings(home)
    cached = list_cached(settings)
    in_use = models_in_use(settings)
    if as_json:
        print(
            json.dumps(
                {
                    "cache": str(settings.models_dir),
                    "in_use": [asdict(m) for m in in_use],
                    "models": [asdict(m) for m in cached],
                },
                indent=2,
            )
        )
        return
    console = _console()
    uses = Table(title="models in use", show_header=True)
    for column in ("used by", "model", "weights"):
        uses.add_column(column, overflow="fold")
    for model in in_use:
        uses.add_row(Text(model.used_by), Text(model.spec), Text(model.weights))
    console.print(uses)
    console.print(Text(f"cache: {settings.models_dir}"))
    table = Table(show_header=True)
    for column in ("repository", "size (MB)", "files"):
        table.add_column(column)
    for model in cached:
        table.add_row(Text(model.repo), f"{model.size_bytes / 1e6:.1f}", str(model.files))
    console.print(
        table if cached else "nothing downloaded into the cache (installed and local models need no download)"
    )


@spaces_app.command("drop")
def spaces_drop(
    name: Annotated[str, typer.Argument(help="Space to empty.")],
    home: HomeOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a space's vectors, every version of them (to change its model without downtime, see `spaces switch`)."""
    if not yes:
        typer.confirm(f"Delete every vector of space '{name}'?", abort=True)
    with _open(_settings(home), existing=True) as engine:
        dropped = engine.drop_space(name)
    _console().print(f"space '{name}': {dropped} vectors deleted; the next `xmodal index` embeds them again")


@spaces_app.command("switch")
def spaces_switch(
    name: Annotated[str, typer.Argument(help="Space whose model changes.")],
    to: Annotated[str | None, typer.Option("--to", help="Encoder spec of the new model.")] = None,
    promote: Annotated[
        bool, typer.Option("--promote", help="Make the new version current now, even before it covers every item.")
    ] = False,
    cancel: Annotated[bool, typer.Option("--cancel", help="Abandon the new version being built.")] = False,
    forget_old: Annotated[
        bool, typer.Option("--forget-old", help="Delete the previous version: no rollback after this.")
    ] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change a space's model without downtime: the next `xmodal index` runs (resumable, --max-items, the nightly
    job) build a new version beside the current one, which keeps answering; it becomes current once it covers
    every item (or at --promote); `xmodal spaces rollback` restores the old one until --forget-old."""
    if not (to or promote or cancel or forget_old):
        raise typer.BadParameter("say what to do: --to SPEC, --promote, --cancel or --forget-old")
    console = _console()
    with _open(_settings(home), existing=True) as engine:
        if cancel:
            console.print(
                f"space '{name}': the new version is abandoned ({engine.cancel_switch(name)} vectors deleted)"
            )
        if to is not None:
            engine.switch_space(name, to)
        if promote:
            engine.promote_space(name, force=True)
        if forget_old:
            gone = engine.forget_old_version(name)
            console.print(f"space '{name}': previous version deleted ({gone} vectors); no rollback after this")
        found = engine.switch_state(name)
    _print_versions(console, found, as_json)
    if to is not None and found.switching and not as_json:
        console.print(
            Text(
                f"the next `xmodal index` runs embed the {found.total - found.covered} remaining items with {to} "
                "(--max-items spreads it over several runs); searches use the current model until then"
            )
        )


@spaces_app.command("rollback")
def spaces_rollback(
    name: Annotated[str, typer.Argument(help="Space to return to its previous model.")],
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make a space's previous version (its model before the last switch) current again."""
    with _open(_settings(home), existing=True) as engine:
        found = engine.rollback_space(name)
    _print_versions(_console(), found, as_json)


def _print_versions(console: Console, found: SwitchState, as_json: bool) -> None:
    if as_json:
        print(json.dumps({**asdict(found), "progress": found.progress}, indent=2))
        return
    for version in found.versions:
        line = f"space '{found.space}' version {version.number} ({version.role}): {version.encoder_spec}, "
        line += f"{version.vectors} vectors" + (f" over {version.items} items" if version.items is not None else "")
        if version.role == "shadow" and found.progress is not None:
            line += f" ({found.covered} of {found.total} items, {found.progress:.0%})"
        console.print(Text(line))


@import_app.command("clip-retrieval")
def import_clip_retrieval(
    folder: Annotated[
        Path,
        typer.Argument(
            help="clip-retrieval's output: img_emb/, text_emb/, metadata/ (or an index folder with image.index)."
        ),
    ],
    space: Annotated[str, typer.Option("--space", help="Space to import into (empty, or made by the same model).")],
    model: Annotated[
        str,
        typer.Option(
            "--model", help="Encoder spec the embeddings were made with, e.g. open_clip:ViT-B-32/laion2b_s34b_b79k."
        ),
    ],
    files: Annotated[
        Path | None,
        typer.Option("--files", help="Folder holding the images its image_path names (else: served by URL)."),
    ] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Import a clip-retrieval output folder: its vectors and metadata go into the catalog and SPACE as they are,
    so text queries are answered with MODEL and /knn-service serves what clip-retrieval's back end did."""
    with _open(_settings(home), existing=False) as engine:
        report = engine.import_clip_retrieval(folder, space=space, encoder_spec=model, files=files)
    if as_json:
        print(json.dumps(asdict(report), indent=2))
        return
    console = _console()
    console.print(
        Text(
            f"space '{report.space}' ({report.encoder_spec}): {report.items} items, {report.vectors} vectors imported "
            f"({report.local_files} with their file, {report.url_only} served by URL)"
        )
    )
    if report.skipped_count:
        console.print(Text(f"{report.skipped_count} rows skipped (no file under --files and no http(s) url)"))


@app.command("eval")
def evaluate(
    manifest: Annotated[Path, typer.Argument(help="Dataset manifest (JSON Lines of items and queries).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for results.json, results.md and the plots.")] = Path(
        "xmodal-eval"
    ),
    home: Annotated[Path | None, typer.Option("--home", help="Home to index into (default: OUT/home).")] = None,
    fit_fusion: Annotated[
        bool,
        typer.Option(
            "--fit-fusion",
            help="Also fit a weight per space and query modality on the manifest and keep those that help in the "
            "home's fusion.json (read by searches from then on).",
        ),
    ] = False,
) -> None:
    """Recall@1/5/10, mAP@10 and nDCG@10 of every direction the manifest has: fused search, each space through its
    index and by brute force, and BM25."""
    from xmodal.evaluation.manifest import Manifest
    from xmodal.evaluation.report import markdown, write_all
    from xmodal.evaluation.runner import evaluate as run_evaluation

    dataset = Manifest.load(manifest)
    console = _console()
    show_bar = sys.stderr.isatty()
    with _open(_settings(home or out / "home"), existing=False) as engine:
        report = run_evaluation(
            engine,
            dataset,
            out / "items",
            progress=BarProgress("queries") if show_bar else None,
            index_progress=BarProgress() if show_bar else None,
        )
        settings = engine.settings
        fitted = None
        if fit_fusion:
            from xmodal.evaluation.fit import fit_fusion as fit

            fitted = fit(engine, dataset, out / "items", source=str(manifest.resolve()))
    written = write_all(
        report,
        out,
        {"manifest": str(manifest.resolve()), "encoders": settings.space_encoders(), "fusion": settings.fusion},
    )
    console.print(Text(markdown(report)), highlight=False, soft_wrap=True)
    console.print(Text("wrote " + ", ".join(str(path) for path in written)))
    if fitted is not None:
        for kind in sorted(fitted.before):
            weights = fitted.weights.get(kind)
            chosen = ", ".join(f"{space} {value:g}" for space, value in weights.items()) if weights else "all 1 (kept)"
            console.print(
                Text(
                    f"fusion for {kind} queries ({fitted.queries[kind]}): mean R@1/5/10 {fitted.before[kind]:.3f} -> "
                    f"{fitted.after[kind]:.3f}; weights: {chosen}"
                )
            )
        console.print(Text(f"wrote {fitted.written}"))


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
    _console().print(Text(f"wrote {manifest}: {len(items)} items, {len(queries)} queries"))


def _quiet_model_loading() -> None:
    """Model libraries draw their own progress bars and log chatter while loading; the CLI has its own output.
    Said through their environment variables, so that transformers is not imported unless a model loads."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # imported already (an embedding application): tell it directly
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
        Console(stderr=True).print(f"[yellow]locked:[/yellow] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_LOCKED)
    except XmodalError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2 if isinstance(exc, _USAGE_ERRORS) else 1)
