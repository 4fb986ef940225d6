"""The ``docmill`` command: parse arguments, call the library, print. Expected errors never show a trace."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from docmill.backends import database_url, open_backend
from docmill.backends.base import Backend
from docmill.config import Config, redact_url
from docmill.errors import DocmillError
from docmill.runner import IngestSummary, ingest
from docmill.search import search
from docmill.stats import collect, latest_run_id

app = typer.Typer(help="Turn piles of documents into a searchable store for RAG, and keep it in step.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
out = Console()
err = Console(stderr=True, soft_wrap=True)  # error lines stay whole for grep and logs
T = TypeVar("T")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.", show_default=False)]
DbOpt = Annotated[str | None, typer.Option("--db", help="Store URL (sqlite:///file.db or postgresql://…); "
                                            "also $DOCMILL_DATABASE_URL.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
RunOpt = Annotated[str | None, typer.Option("--run-id", help="Run to show (default: this config's run, "
                                            "else the latest).", show_default=False)]


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _guard(fn: Callable[[], T]) -> T:
    """Run a command body; a docmill error becomes one red line and exit code 1."""
    try:
        return fn()
    except DocmillError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    raise AssertionError("unreachable")


@contextmanager
def _store(config: Path | None, db: str | None) -> Iterator[tuple[Config, Backend]]:
    cfg = Config.load(config)
    backend = open_backend(database_url(cfg, db), cfg)
    try:
        yield cfg, backend
    finally:
        backend.close()


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


class _BarProgress:
    """A rich progress bar on a terminal, a line every few seconds otherwise."""

    def __init__(self) -> None:
        self.tty = err.is_terminal
        self.started = time.monotonic()
        self.first_finished: int | None = None
        self.last_line = 0.0
        self.bar: Progress | None = None
        self.task: Any = None

    def __enter__(self) -> _BarProgress:
        if self.tty:
            self.bar = Progress(TextColumn("[bold]ingesting"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("docs"), TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                                console=err, transient=False)
            self.bar.start()
            self.task = self.bar.add_task("ingest", total=None, rate="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar:
            self.bar.stop()

    def update(self, finished: int, total: int, counts: dict[str, int]) -> None:
        if self.first_finished is None:
            self.first_finished = finished  # documents already done before this command started
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = (finished - self.first_finished) / elapsed
        if self.bar is not None:
            self.bar.update(self.task, completed=finished, total=total or None, rate=f"{rate:.1f} docs/s")
        elif time.monotonic() - self.last_line >= 5 or (total and finished == total):
            self.last_line = time.monotonic()
            err.print(f"ingest: {finished}/{total} documents, {rate:.1f} docs/s, "
                      f"{counts.get('dead', 0)} dead-lettered", highlight=False)


def _print_summary(s: IngestSummary) -> None:
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_row("run", s.run_id)
    table.add_row("documents", f"{s.documents} ({', '.join(f'{k} {v}' for k, v in s.counts.items() if v)})")
    table.add_row("this ingest", f"{s.processed} processed: {s.done} embedded, {s.unchanged} unchanged, "
                  f"{s.retried} to retry, {s.dead} dead-lettered; discovered {s.new} new, {s.changed} changed, "
                  f"removed {s.removed}")
    table.add_row("chunks", f"{s.chunks} stored, {s.embedded_chunks} embedded now, {s.cache_hits} from cache")
    table.add_row("time", f"{s.seconds:.1f} s, {s.docs_per_sec:.2f} docs/s with {s.workers} worker(s)")
    out.print(table)
    for warning in s.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    for error in s.errors:
        err.print(f"[red]worker error:[/] {error}", highlight=False)
    if s.dead_letters:
        err.print(f"[bold red]{s.counts.get('dead', 0)} document(s) in the dead-letter queue:[/]")
        for d in s.dead_letters:
            err.print(f"  {d['uri']}: [red]{d['error_class']}[/]: {d['error']}", highlight=False)
    if s.limit_reached:
        err.print(f"--limit reached: {s.counts.get('pending', 0)} documents still pending")


@app.command("ingest")
def ingest_cmd(
    sources: Annotated[list[str] | None, typer.Argument(help="Folders, files or globs; a .yaml file is "
                                                        "the config.", show_default=False)] = None,
    config: ConfigOpt = None, db: DbOpt = None,
    workers: Annotated[int | None, typer.Option("--workers", "-w", min=1, help="Worker processes "
                                                "(default workers.max_workers).", show_default=False)] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Process at most N documents.",
                                              show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Join (or start) the run for this config and process documents until it drains."""
    paths = list(sources or [])
    if paths and paths[0].endswith((".yaml", ".yml")) and Path(paths[0]).is_file():
        if config:
            _fail("give the config either as the first argument or with --config, not both")
        config = Path(paths.pop(0))

    def body() -> IngestSummary:
        if as_json:
            return ingest(config, paths, db=db, workers=workers, limit=limit, handle_signals=True)
        with _BarProgress() as bar:
            return ingest(config, paths, db=db, workers=workers, limit=limit, progress=bar,
                          handle_signals=True)

    summary = _guard(body)
    if as_json:
        _print_json(summary.to_dict())
    else:
        _print_summary(summary)
    raise typer.Exit(summary.exit_code)


@app.command("search")
def search_cmd(
    query: Annotated[str, typer.Argument(help="A question or keywords.")],
    k: Annotated[int, typer.Option("-k", "--top", min=1, help="How many chunks.")] = 5,
    mode: Annotated[str, typer.Option("--mode", help="hybrid, vector or text.")] = "hybrid",
    config: ConfigOpt = None, db: DbOpt = None, as_json: JsonOpt = False,
) -> None:
    """Find the chunks that best answer QUERY."""
    if mode not in ("hybrid", "vector", "text"):
        _fail(f"--mode must be hybrid, vector or text (got {mode!r})")
    hits = _guard(lambda: search(query, config, db=db, k=k, mode=mode))  # type: ignore[arg-type]
    if as_json:
        _print_json([asdict(h) for h in hits])
        return
    if not hits:
        err.print("no results")
        return
    for i, h in enumerate(hits, 1):
        where = " › ".join([*([h.title] if h.title else []), *h.heading_path])
        page = f" (page {h.page})" if h.page else ""
        out.print(f"[bold]{i}.[/] [cyan]{h.score:.4f}[/]  [green]{h.uri}[/]{page}", highlight=False)
        if where:
            out.print(f"   [dim]{where}[/]", highlight=False)
        snippet = " ".join(h.text.split())
        out.print(f"   {snippet[:300]}{'…' if len(snippet) > 300 else ''}", highlight=False)


@app.command("status")
def status_cmd(config: ConfigOpt = None, db: DbOpt = None, run_id: RunOpt = None, as_json: JsonOpt = False,
               detailed: Annotated[bool, typer.Option("--detailed", help="Show every worker.")] = False,
               show_failures: Annotated[bool, typer.Option("--show-failures", help="List dead letters.")] = False,
               ) -> None:
    """Run state, queue depth by state, workers, throughput and failures."""
    def body() -> dict[str, Any]:
        with _store(config, db) as (cfg, backend):
            stats = collect(backend, cfg, run_id or latest_run_id(backend, cfg))
            data = stats.to_dict()
            if show_failures:
                data["failures"] = [asdict(d) for d in backend.documents(stats.run_id, "dead", 200)]
            return data

    data = _guard(body)
    if as_json:
        _print_json(data)
        return
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_row("run", f"{data['run_id']} ({data['state']}), leader {data['leader_id'] or '-'}")
    table.add_row("documents", ", ".join(f"{k} {v}" for k, v in data["counts"].items()))
    table.add_row("chunks", str(data["chunks"]))
    table.add_row("workers", f"{data['active_workers']} active, {data['stale_workers']} stale")
    rates = ", ".join(f"{k} {v:.2f}/s" for k, v in data["throughput_windows"].items())
    table.add_row("throughput", rates)
    if data["avg_processing_time"] is not None:
        table.add_row("per document", f"avg {data['avg_processing_time']:.2f} s, "
                      f"p95 {data['p95_processing_time']:.2f} s")
    if data["eta_seconds"]:
        table.add_row("eta", f"{data['eta_seconds']:.0f} s")
    out.print(table)
    if detailed and data["workers"]:
        wt = Table("worker", "host", "pid", "last beat", "holding", "processed", "failed", "state")
        for w in data["workers"]:
            state = "stopped" if w["stopped_at"] else ("STALE" if w["stale"] else "running")
            wt.add_row(w["worker_id"], w["host"], str(w["pid"]), f"{w['seconds_since_beat']:.0f}s ago",
                       str(w["current_docs"]), str(w["processed"]), str(w["failed"]), state)
        out.print(wt)
    for f in data.get("failures", []):
        out.print(f"[red]dead[/] {f['uri']}: {f['error_class']}: {f['last_error']}", highlight=False)


@app.command("documents")
def documents_cmd(config: ConfigOpt = None, db: DbOpt = None, run_id: RunOpt = None,
                  state: Annotated[str | None, typer.Option("--state", help="pending, claimed, done or dead.",
                                                            show_default=False)] = None,
                  limit: Annotated[int | None, typer.Option("--limit", min=1, show_default=False)] = None,
                  as_json: JsonOpt = False) -> None:
    """One row per document: id, URI, state, attempts, chunks, last error."""
    if state and state not in ("pending", "claimed", "done", "dead"):
        _fail(f"--state must be pending, claimed, done or dead (got {state!r})")

    def body() -> list[dict[str, Any]]:
        with _store(config, db) as (cfg, backend):
            rid = run_id or latest_run_id(backend, cfg)
            return [asdict(d) for d in backend.documents(rid, state, limit)]

    rows = _guard(body)
    if as_json:
        _print_json(rows)
        return
    table = Table("id", "uri", "state", "attempts", "chunks", "last error")
    for r in rows:
        table.add_row(str(r["id"]), r["uri"], r["state"], str(r["attempts"]), str(r["chunks"]),
                      f"{r['error_class']}: {r['last_error']}" if r["last_error"] else "")
    out.print(table)


@app.command("validate")
def validate_cmd(config: Annotated[Path, typer.Argument(help="YAML config to check.")]) -> None:
    """Check a config file and print it resolved (defaults filled in, secrets hidden)."""
    cfg = _guard(lambda: Config.load(config))
    out.print(f"[green]{config}: valid[/] (run id {cfg.run_id()})", highlight=False)
    sys.stdout.write(yaml.safe_dump(cfg.redacted(), sort_keys=False))


@app.command("init-db")
def init_db_cmd(config: ConfigOpt = None, db: DbOpt = None) -> None:
    """Create or upgrade the store's schema (safe to run many times, from many machines at once)."""
    def body() -> str:
        with _store(config, db) as (_cfg, backend):
            backend.init_schema()
            return backend.url

    url = _guard(body)
    out.print(f"schema ready: {redact_url(url)}", highlight=False)


def main() -> None:
    """Console-script entry point."""
    app()
