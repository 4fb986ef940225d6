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
from rich.markup import escape as escape_markup
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from docmill import ops
from docmill.backends import database_url, open_backend, open_store
from docmill.backends.base import Backend
from docmill.config import Config, redact_url
from docmill.errors import DocmillError
from docmill.ops import RequeueReport, analyze
from docmill.printable import printable
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


def escape(text: str) -> str:
    """Text from files and documents as one inert line of rich markup: no markup, no terminal control."""
    return escape_markup(printable(text))


def _fail(message: str, code: int = 1) -> None:
    # Messages may span lines (a config's errors, one per line); their controls are still shown inert.
    err.print(f"[bold red]error:[/] {escape_markup(printable(message, one_line=False))}", highlight=False)
    raise typer.Exit(code)


def _guard(fn: Callable[[], T]) -> T:
    """Run a command body; a docmill error becomes one red line and exit code 1."""
    try:
        return fn()
    except DocmillError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except MemoryError:
        _fail("out of memory: give the process more memory, or lower workers.max_inflight_chunks, "
              "embedding.batch_size or --workers")
    raise AssertionError("unreachable")


@contextmanager
def _store(config: Path | None, db: str | None, *, create: bool = False) -> Iterator[tuple[Config, Backend]]:
    """The config and an open store: one ``docmill ingest`` made, unless ``create``."""
    cfg = Config.load(config)
    url = database_url(cfg, db)
    backend = open_backend(url, cfg) if create else open_store(url, cfg)
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
        self.previous: int | None = None  # documents finished at the previous update
        self.finished_here = 0  # documents this command saw finish
        self.last_line = 0.0
        self.shown = -1  # documents finished at the last line printed
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
        # Only increases count: discovery removing vanished documents lowers `finished` without any
        # work undone, and the documents done before this command started are not its work.
        if self.previous is not None:
            self.finished_here += max(0, finished - self.previous)
        self.previous = finished
        rate = self.finished_here / max(time.monotonic() - self.started, 1e-6)
        if self.bar is not None:
            self.bar.update(self.task, completed=finished, total=total or None, rate=f"{rate:.1f} docs/s")
        elif total and (time.monotonic() - self.last_line >= 5 or (finished == total and self.shown != finished)):
            # Not "0/0" before discovery has listed anything, and the last line once.
            self.last_line, self.shown = time.monotonic(), finished
            err.print(f"ingest: {finished}/{total} documents, {rate:.1f} docs/s, "
                      f"{counts.get('dead', 0)} dead-lettered", highlight=False)


def _print_summary(s: IngestSummary) -> None:
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_row("run", s.run_id)
    states = ", ".join(f"{k} {v}" for k, v in s.counts.items() if v)
    table.add_row("documents", f"{s.documents} ({states})" if states else str(s.documents))
    if s.processed or s.new or s.changed or s.removed or s.errors or s.limit_reached:
        table.add_row("this ingest", f"{s.processed} processed: {s.done} embedded, {s.unchanged} unchanged, "
                      f"{s.retried} to retry, {s.dead} dead-lettered; discovered {s.new} new, {s.changed} "
                      f"changed, removed {s.removed}")
    elif not s.documents:
        table.add_row("this ingest", "the sources listed no documents (empty folder, or include/exclude left none)")
    else:
        table.add_row("this ingest", "nothing changed since the last ingest: no file was read")
    table.add_row("chunks", f"{s.chunks} stored, {s.embedded_chunks} embedded now, {s.cache_hits} from cache")
    took = f"{s.seconds:.1f} s" if s.seconds >= 1 else f"{s.seconds * 1000:.0f} ms"
    rate = f", {s.docs_per_sec:.2f} docs/s with {s.workers} worker(s)" if s.processed else ""
    table.add_row("time", took + rate)
    out.print(table)
    for warning in s.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    for error in s.errors:
        err.print(f"[red]worker error:[/] {escape(str(error))}", highlight=False)
    if s.dead_letters:
        err.print(f"[bold red]{s.counts.get('dead', 0)} document(s) in the dead-letter queue:[/]")
        for d in s.dead_letters:
            err.print(f"  {escape(d['uri'])}: [red]{d['error_class']}[/]: {escape(d['error'])}", highlight=False)
    left = s.counts.get("pending", 0) + s.counts.get("claimed", 0)
    if s.limit_reached:
        err.print(f"--limit reached: {left} documents still pending")
    elif left:
        err.print(f"[yellow]stopped before the end:[/] {left} documents still to do; run the same command "
                  "again to go on from here", highlight=False)


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
    k: Annotated[int, typer.Option("-k", "--top", "--limit", min=1, help="How many chunks.")] = 5,
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
        # A Markdown title is usually also the first heading: say it once.
        title = [h.title] if h.title and tuple(h.heading_path[:1]) != (h.title,) else []
        where = " › ".join([*title, *h.heading_path])
        page = f" (page {h.page})" if h.page else ""
        # Document text and paths are escaped: "[dev]" in a chunk is text, not rich markup.
        out.print(f"[bold]{i}.[/] [cyan]{h.score:.4f}[/]  [green]{escape(h.uri)}[/]{page}", highlight=False)
        if where:
            out.print(f"   [dim]{escape(where)}[/]", highlight=False)
        snippet = " ".join(h.text.split())
        out.print(f"   {escape(snippet[:300])}{'…' if len(snippet) > 300 else ''}", highlight=False)


@contextmanager
def _run_store(config: Path | None, db: str | None, run_id: str | None) -> Iterator[tuple[Config, Backend, str]]:
    """The config, an open store and the run to act on (``--run-id``, else this config's run, else the latest)."""
    with _store(config, db) as (cfg, backend):
        yield cfg, backend, run_id or latest_run_id(backend, cfg)


def _ago(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.0f}s"


@app.command("status")
def status_cmd(config: ConfigOpt = None, db: DbOpt = None, run_id: RunOpt = None, as_json: JsonOpt = False,
               detailed: Annotated[bool, typer.Option("--detailed", help="Every worker with the documents "
                                                      "it holds, and every claim.")] = False,
               show_failures: Annotated[bool, typer.Option("--show-failures", help="List dead letters and "
                                                           "their groups.")] = False,
               ) -> None:
    """Run state and leader, documents by state, workers, throughput over 1/5/15 min, p95, ETA, failures."""
    def body() -> dict[str, Any]:
        with _run_store(config, db, run_id) as (cfg, backend, rid):
            data = collect(backend, cfg, rid).to_dict()
            if show_failures:
                dead = backend.documents(rid, "dead", None)
                data["failures"] = [asdict(d) for d in dead[:500]]
                data["failure_groups"] = [asdict(g) for g in analyze(dead)]
            return data

    data = _guard(body)
    if as_json:
        _print_json(data)
        return
    table = Table(show_header=False, box=None, padding=(0, 2))
    leader = data["leader_id"] or "-"
    if data["leader_expires_in"] is not None:
        leader += f" (lease {data['leader_expires_in']:.0f}s)"
    shutdown = ", SHUTDOWN requested" if data["shutdown_requested"] else ""
    table.add_row("run", f"{data['run_id']} ({data['state']}{shutdown}), leader {leader}")
    table.add_row("documents", ", ".join(f"{k} {v}" for k, v in data["counts"].items()))
    table.add_row("chunks", str(data["chunks"]))
    stale = [w["worker_id"] + (" gone" if w["state"] == "gone" else "") for w in data["workers"]
             if w["state"] in ("stale", "gone")]
    table.add_row("workers", f"{data['active_workers']} active, {data['stale_workers']} stale"
                  + (f" ({', '.join(stale)})" if stale else ""))
    if data["counts"]["claimed"]:
        table.add_row("claims", f"{data['counts']['claimed']} held, {data['claimed_expired']} with a lapsed lease, "
                      f"longest held {_ago(data['oldest_claim_seconds'])}")
    table.add_row("throughput", ", ".join(f"{k} {v:.2f}/s" for k, v in data["throughput_windows"].items()))
    if data["avg_processing_time"] is not None:
        table.add_row("per document", f"avg {data['avg_processing_time']:.2f} s, "
                      f"p95 {data['p95_processing_time']:.2f} s (last 15 min)")
    if data["eta_seconds"]:
        table.add_row("eta", f"{data['eta_seconds']:.0f} s")
    if data["failures_by_class"]:
        table.add_row("dead letters", ", ".join(f"{k} {v}" for k, v in data["failures_by_class"].items()))
    out.print(table, highlight=False)
    if detailed and data["workers"]:
        wt = Table("worker", "host", "pid", "state", "last beat", "holding", "processed", "failed")
        for w in data["workers"]:
            holding = ", ".join(Path(u).name for u in w["holding"][:3]) + (" …" if len(w["holding"]) > 3 else "")
            wt.add_row(w["worker_id"], w["host"], str(w["pid"]), w["state"], f"{w['seconds_since_beat']:.0f}s ago",
                       f"{len(w['holding'])} {holding}".strip(), str(w["processed"]), str(w["failed"]))
        out.print(wt)
    for g in data.get("failure_groups", []):
        out.print(f"[red]{g['count']} × {g['error_class']}[/]: {escape(g['pattern'])}\n   e.g. #{g['example_id']} "
                  f"{escape(g['example_uri'])}", highlight=False)
    for f in data.get("failures", []):
        out.print(f"[red]dead[/] #{f['id']} {escape(f['uri'])}: {f['error_class']}: {escape(f['last_error'] or '')}",
                  highlight=False)


@app.command("documents")
def documents_cmd(config: ConfigOpt = None, db: DbOpt = None, run_id: RunOpt = None,
                  state: Annotated[str | None, typer.Option("--state", help="pending, claimed, done or dead.",
                                                            show_default=False)] = None,
                  source: Annotated[str | None, typer.Option("--source", help="Only this content source (its "
                                                             "name).", show_default=False)] = None,
                  limit: Annotated[int | None, typer.Option("--limit", min=1, show_default=False)] = None,
                  as_json: JsonOpt = False) -> None:
    """One row per document: id, URI, state, attempts, chunks, last error."""
    if state and state not in ("pending", "claimed", "done", "dead"):
        _fail(f"--state must be pending, claimed, done or dead (got {state!r})")

    def body() -> list[dict[str, Any]]:
        with _run_store(config, db, run_id) as (_cfg, backend, rid):
            return [asdict(d) for d in backend.documents(rid, state, limit, source)]

    rows = _guard(body)
    if as_json:
        _print_json(rows)
        return
    # The file is what a reader looks for: it gets more of a narrow terminal than the error, and wraps.
    table = Table(expand=True)
    table.add_column("id", no_wrap=True)
    table.add_column("uri", ratio=3, overflow="fold")
    for name in ("state", "attempts", "chunks"):
        table.add_column(name, no_wrap=True)
    table.add_column("last error", ratio=2)
    for r in rows:
        table.add_row(str(r["id"]), Text(printable(r["uri"])), r["state"], str(r["attempts"]), str(r["chunks"]),
                      Text(printable(f"{r['error_class']}: {r['last_error']}") if r["last_error"] else ""))
    out.print(table)


@app.command("monitor")
def monitor_cmd(config: ConfigOpt = None, db: DbOpt = None, run_id: RunOpt = None, as_json: JsonOpt = False,
                live_: Annotated[bool, typer.Option("--live", help="Full-screen dashboard, refreshed every "
                                                    "second; Ctrl-C quits.")] = False,
                alerts: Annotated[bool, typer.Option("--alerts", help="Check monitoring thresholds; exit 2 when "
                                                     "one fires (for cron).")] = False,
                export: Annotated[Path | None, typer.Option("--export", help="Write the full metrics snapshot "
                                                            "as JSON to FILE.", show_default=False)] = None,
                interval: Annotated[float, typer.Option("--interval", min=0.2, help="Seconds between "
                                                        "refreshes of --live.")] = 1.0,
                ) -> None:
    """Live dashboard, alert thresholds and JSON export of the run's metrics."""
    from docmill import monitor

    def body() -> tuple[dict[str, Any], list[Any]]:
        with _run_store(config, db, run_id) as (cfg, backend, rid):
            if live_:
                monitor.live(backend, cfg, rid, out, interval)
                return {}, []
            snap = monitor.snapshot(backend, cfg, rid)
            if export:
                _write_export(monitor, export, snap)
                err.print(f"metrics snapshot written to {export}", highlight=False)
            fired: list[Any] = []
            if alerts:
                stats, fired = monitor.check_alerts(backend, cfg, rid)
                snap["alerts"] = [asdict(a) for a in fired]
                snap["stats"] = stats.to_dict()
            return snap, fired

    snap, fired = _guard(body)
    if live_:
        return
    if as_json:
        _print_json(snap)
    elif alerts:
        for a in fired:
            out.print(f"[bold red]ALERT[/] {a.name}: {escape(a.message)}", highlight=False)
        if not fired:
            out.print("no alerts", highlight=False)
    elif not export:
        s = snap["stats"]
        out.print(f"run {s['run_id']} ({s['state']}): " + ", ".join(f"{k} {v}" for k, v in s["counts"].items())
                  + f"; {s['active_workers']} workers; {s['throughput']:.2f} docs/s", highlight=False)
    if alerts and fired:
        raise typer.Exit(2)


def _write_export(monitor: Any, path: Path, snap: dict[str, Any]) -> None:
    try:
        monitor.export(path, snap)
    except OSError as exc:
        raise DocmillError(f"cannot write {path}: {exc.strerror or exc}") from None


deadletter_app = typer.Typer(help="List, analyze, retry and purge the dead-letter queue.", no_args_is_help=True)
app.add_typer(deadletter_app, name="deadletter")


@deadletter_app.command("list")
def deadletter_list_cmd(config: ConfigOpt = None, db: DbOpt = None, run_id: RunOpt = None, as_json: JsonOpt = False,
                        details: Annotated[bool, typer.Option("--details", help="Full error messages and "
                                                              "attempts.")] = False,
                        limit: Annotated[int | None, typer.Option("--limit", min=1, show_default=False)] = None,
                        ) -> None:
    """Dead documents of the run, newest first."""
    def body() -> list[dict[str, Any]]:
        with _run_store(config, db, run_id) as (_cfg, backend, rid):
            rows = sorted(backend.documents(rid, "dead", None), key=lambda d: -d.updated_at)
            return [asdict(d) for d in rows[:limit]]

    rows = _guard(body)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print("the dead-letter queue is empty")
        return
    if details:  # whole messages, one block per document (a table would cut them)
        for r in rows:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["updated_at"]))
            out.print(f"[bold]#{r['id']}[/] {escape(r['uri'])}\n  [red]{r['error_class']}[/], "
                      f"{r['attempts']} attempt(s), "
                      f"dead since {when}\n  {escape(r['last_error'] or '')}", highlight=False, soft_wrap=True)
        return
    table = Table("id", "uri", "error")
    for r in rows:
        table.add_row(str(r["id"]), Text(printable(r["uri"])), r["error_class"] or "")
    out.print(table)


@deadletter_app.command("analyze")
def deadletter_analyze_cmd(config: ConfigOpt = None, db: DbOpt = None, run_id: RunOpt = None,
                           as_json: JsonOpt = False) -> None:
    """Group dead documents by error class and message pattern, with counts and an example."""
    def body() -> list[dict[str, Any]]:
        with _run_store(config, db, run_id) as (_cfg, backend, rid):
            return [asdict(g) for g in analyze(backend.documents(rid, "dead", None))]

    groups = _guard(body)
    if as_json:
        _print_json(groups)
        return
    if not groups:
        out.print("the dead-letter queue is empty")
        return
    table = Table("count", "error class", "pattern", "example")
    for g in groups:
        table.add_row(str(g["count"]), g["error_class"], Text(printable(g["pattern"])),
                      Text(f"#{g['example_id']} {printable(g['example_uri'])}\n{printable(g['example_message'])}"))
    out.print(table)


def _print_requeue(report: RequeueReport, as_json: bool) -> None:
    if as_json:
        _print_json(report.to_dict())
        return
    out.print(f"{len(report.requeued)} document(s) back to pending (attempts reset): "
              f"{', '.join(map(str, report.requeued)) or '-'}", highlight=False)
    for ident, why in report.skipped.items():
        err.print(f"[yellow]skipped[/] {ident}: {why}", highlight=False)
    if report.requeued and report.run_state != "ingesting":
        out.print(f"the run is {report.run_state}: run `docmill ingest` with this config to process them")


@deadletter_app.command("retry")
def deadletter_retry_cmd(ids: Annotated[list[str] | None, typer.Argument(help="Document ids (or paths).",
                                                                          show_default=False)] = None,
                         run: Annotated[str | None, typer.Option("--run", help="Retry every dead letter of this "
                                                                 "run.", show_default=False)] = None,
                         config: ConfigOpt = None, db: DbOpt = None, run_id: RunOpt = None,
                         as_json: JsonOpt = False) -> None:
    """Put dead documents back to pending with attempts reset (their history is kept)."""
    if not ids and not run:
        _fail("name document ids (docmill deadletter retry 12 15) or a whole run (--run RUN)")

    def body() -> RequeueReport:
        with _run_store(config, db, run or run_id) as (_cfg, backend, rid):
            return ops.requeue(backend, rid, ids or [], all_dead=not ids)

    _print_requeue(_guard(body), as_json)


@deadletter_app.command("purge")
def deadletter_purge_cmd(older_than: Annotated[str, typer.Option("--older-than", help="Age, e.g. 30d, 12h.")],
                         config: ConfigOpt = None, db: DbOpt = None,
                         run_id: Annotated[str | None, typer.Option("--run-id", help="Only this run (default: "
                                                                    "every run).", show_default=False)] = None,
                         as_json: JsonOpt = False) -> None:
    """Delete dead documents (and their chunks) that have been dead longer than --older-than."""
    def body() -> int:
        seconds = ops.parse_duration(older_than)
        with _store(config, db) as (_cfg, backend):
            return backend.purge_dead(run_id, seconds)

    count = _guard(body)
    if as_json:
        _print_json({"purged": count, "older_than": older_than})
    else:
        out.print(f"purged {count} dead document(s) older than {older_than}", highlight=False)


@app.command("retry")
def retry_cmd(doc_ids: Annotated[str | None, typer.Option("--doc-ids", help="Comma-separated document ids or "
                                                          "paths.", show_default=False)] = None,
              from_dlq: Annotated[bool, typer.Option("--from-dead-letter-queue", help="Every dead document of "
                                                     "the run.")] = False,
              config: ConfigOpt = None, db: DbOpt = None, run_id: RunOpt = None, as_json: JsonOpt = False) -> None:
    """Send failed documents back to pending with attempts reset."""
    idents = [i.strip() for i in (doc_ids or "").split(",") if i.strip()]
    if bool(idents) == from_dlq:
        _fail("give either --doc-ids a,b,c or --from-dead-letter-queue")

    def body() -> RequeueReport:
        with _run_store(config, db, run_id) as (_cfg, backend, rid):
            return ops.requeue(backend, rid, idents, all_dead=from_dlq)

    _print_requeue(_guard(body), as_json)


@app.command("claims")
def claims_cmd(config: ConfigOpt = None, db: DbOpt = None, run_id: RunOpt = None, as_json: JsonOpt = False,
               show_expired: Annotated[bool, typer.Option("--show-expired", help="Also claims whose lease "
                                                          "lapsed (their worker is gone).")] = False) -> None:
    """Documents held under a lease now: by which worker, since when, until when."""
    def body() -> list[dict[str, Any]]:
        with _run_store(config, db, run_id) as (_cfg, backend, rid):
            return [asdict(c) for c in backend.claims(rid) if show_expired or not c.expired]

    rows = _guard(body)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print("no claims")
        return
    now = time.time()
    table = Table("id", "uri", "worker", "attempt", "held", "lease")
    for c in rows:
        lease = "EXPIRED" if c["expired"] else f"{(c['lease_expires_at'] or now) - now:.0f}s left"
        table.add_row(str(c["id"]), Text(printable(c["uri"])), c["worker_id"] or "-", str(c["attempts"]),
                      f"{c['held_seconds']:.0f}s", lease)
    out.print(table)


@app.command("reset-claims")
def reset_claims_cmd(older_than: Annotated[str, typer.Option("--older-than", help="Release claims held longer "
                                                             "than this, e.g. 1h, 30m.")] = "1h",
                     config: ConfigOpt = None, db: DbOpt = None, run_id: RunOpt = None,
                     as_json: JsonOpt = False) -> None:
    """Release stuck claims (no attempt spent); a late completion by their worker is then rejected."""
    def body() -> tuple[str, int]:
        seconds = ops.parse_duration(older_than)
        with _run_store(config, db, run_id) as (_cfg, backend, rid):
            return rid, backend.reset_claims(rid, seconds, f"reset-claims --older-than {older_than}")

    rid, count = _guard(body)
    if as_json:
        _print_json({"run_id": rid, "released": count, "older_than": older_than})
    else:
        out.print(f"released {count} claim(s) held longer than {older_than} in run {rid}", highlight=False)


@app.command("trace")
def trace_cmd(doc_id: Annotated[str, typer.Option("--doc-id", help="Document id, URI or path.")],
              config: ConfigOpt = None, db: DbOpt = None, run_id: RunOpt = None, as_json: JsonOpt = False) -> None:
    """The full story of one document: discovered, claimed, done/skipped/failed, lost, removed."""
    def body() -> list[ops.Trace]:
        with _run_store(config, db, run_id) as (_cfg, backend, rid):
            return ops.trace(backend, rid, doc_id)

    traces = _guard(body)
    if as_json:
        _print_json([t.to_dict() for t in traces])
        return
    for t in traces:
        d = t.document
        if d:
            out.print(f"[bold]#{t.document_id}[/] {escape(d['uri'])}: [bold]{d['state']}[/], {d['chunks']} chunks, "
                      f"{d['attempts']} attempt(s), {t.relationships} relationship(s)", highlight=False)
        else:
            out.print(f"[bold]#{t.document_id}[/]: no longer in the store", highlight=False)
        for s in t.steps:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.at))
            facts = ", ".join(f"{k}={v}" for k, v in s.detail.items() if k not in ("uri",) and v not in (None, ""))
            out.print(f"  {when}  [cyan]{s.kind:<10}[/] {s.worker_id or '':<24} {facts}", highlight=False)
            out.print(f"  {'':19}  [dim]{s.meaning}[/]", highlight=False)


@app.command("shutdown")
def shutdown_cmd(config: ConfigOpt = None, db: DbOpt = None, run_id: RunOpt = None,
                 wait: Annotated[bool, typer.Option("--wait", help="Wait until every worker of the run "
                                                    "exited.")] = False,
                 timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits.")] = 600.0,
                 as_json: JsonOpt = False) -> None:
    """Ask every worker of the run, on every machine, to stop after the documents it holds."""
    def body() -> dict[str, Any]:
        with _run_store(config, db, run_id) as (cfg, backend, rid):
            backend.request_shutdown(rid)
            result: dict[str, Any] = {"run_id": rid, "shutdown_requested": True}
            if not wait:
                return result

            def progress(state: ops.FleetState) -> None:
                if not as_json:
                    err.print(f"waiting: {len(state.alive)} worker(s) alive, {state.claimed} document(s) "
                              f"claimed", highlight=False)

            result["stopped"] = ops.wait_for_shutdown(backend, cfg, rid, timeout, progress)
            final = ops.fleet_state(backend, cfg, rid)
            result.update(alive=final.alive, claimed=final.claimed)
            return result

    result = _guard(body)
    if as_json:
        _print_json(result)
    elif not wait:
        out.print(f"shutdown requested for run {result['run_id']}: workers stop within one poll interval",
                  highlight=False)
    elif result["stopped"]:
        out.print(f"every worker of run {result['run_id']} has stopped ({result['claimed']} claimed left)",
                  highlight=False)
    if wait and not result["stopped"]:
        _fail(f"workers still alive after {timeout:.0f} s: {', '.join(result['alive'])}")


@app.command("stop")
def stop_cmd(force: Annotated[bool, typer.Option("--force", help="Also release every claim now; running "
                                                 "workers' late completions are rejected.")] = False,
             config: ConfigOpt = None, db: DbOpt = None, run_id: RunOpt = None, as_json: JsonOpt = False) -> None:
    """Stop the run's workers: the shutdown flag, and with --force every claim released at once."""
    def body() -> dict[str, Any]:
        with _run_store(config, db, run_id) as (_cfg, backend, rid):
            backend.request_shutdown(rid)
            released = backend.reset_claims(rid, 0.0, "stop --force") if force else 0
            return {"run_id": rid, "shutdown_requested": True, "released": released}

    result = _guard(body)
    if as_json:
        _print_json(result)
    else:
        out.print(f"run {result['run_id']}: shutdown requested"
                  + (f", {result['released']} claim(s) released" if force else ""), highlight=False)


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
        with _store(config, db, create=True) as (_cfg, backend):
            backend.init_schema()
            return backend.url

    url = _guard(body)
    out.print(f"schema ready: {redact_url(url)}", highlight=False)


@app.command("benchmark")
def benchmark_cmd(
    config: ConfigOpt = None,
    documents: Annotated[int, typer.Option("--documents", help="Generated Markdown documents.")] = 200,
    folder: Annotated[Path | None, typer.Option("--folder", help="Benchmark this folder instead.",
                                                show_default=False)] = None,
    workers: Annotated[str, typer.Option("--workers", help="Worker counts to measure, e.g. 1,2,4,8.")] = "1",
    output: Annotated[Path | None, typer.Option("--output", help="Also write the JSON here.",
                                                show_default=False)] = None,
    raw: Annotated[bool, typer.Option("--raw/--no-raw", help="Also time the bare embedder.")] = True,
) -> None:
    """Measure ingest throughput (docs/s, chunks/s, latencies, RSS, scaling) and pipeline efficiency; JSON."""
    from docmill.benchmark import benchmark, parse_workers

    def body() -> None:
        try:
            counts = parse_workers(workers)
        except ValueError as exc:
            _fail(str(exc))
        result = benchmark(Config.load(config), documents=documents, folder=folder, workers=counts, raw=raw)
        text = json.dumps(result, indent=2)
        if output:
            output.write_text(text + "\n")
        out.print_json(text) if sys.stdout.isatty() else print(text)

    _guard(body)


def main() -> None:
    """Console-script entry point."""
    app()
