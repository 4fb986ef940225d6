"""``docmill monitor``: a metrics snapshot, alert checks for cron, and a live terminal dashboard.

Everything is read from the database, so any machine of a run shows the same picture.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.layout import Layout
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from docmill.backends.base import Backend
from docmill.config import Config
from docmill.models import DocState, RunState
from docmill.ops import analyze
from docmill.printable import printable
from docmill.stats import ProcessingStats, collect

SPARK = "▁▂▃▄▅▆▇█"


@dataclass
class Alert:
    """One threshold that fired."""

    name: str  # queue_depth | processing_time | throughput | stale_workers | dead_letters
    message: str
    value: float
    threshold: float


def snapshot(backend: Backend, config: Config, run_id: str) -> dict[str, Any]:
    """The full metrics of a run as one JSON-ready dict (what ``--export`` writes)."""
    claims = backend.claims(run_id, 1000)
    stats = collect(backend, config, run_id, claims)
    dead = backend.documents(run_id, DocState.DEAD, 1000) if stats.failed_count else []
    mon = config.monitoring
    return {
        "stats": stats.to_dict(),
        "claims": [asdict(c) for c in claims[:200]],
        "recent_errors": [asdict(e) for e in backend.recent_errors(run_id, 20)],
        "dead_letter_groups": [asdict(g) for g in analyze(dead)],
        "thresholds": {"max_queue_depth": mon.max_queue_depth, "max_processing_time": mon.max_processing_time,
                       "min_throughput": mon.min_throughput},
        "alerts": [asdict(a) for a in evaluate(config, stats, None)],
    }


def evaluate(config: Config, stats: ProcessingStats, previous_dead: int | None) -> list[Alert]:
    """The thresholds of ``monitoring`` checked against a run's statistics (pure: no writes)."""
    mon = config.monitoring
    alerts: list[Alert] = []
    if stats.queue_depth > mon.max_queue_depth:
        alerts.append(Alert("queue_depth", f"{stats.queue_depth} documents queued, over max_queue_depth "
                            f"{mon.max_queue_depth}", stats.queue_depth, mon.max_queue_depth))
    longest = max(stats.oldest_claim_seconds or 0.0, stats.p95_processing_time or 0.0)
    if longest > mon.max_processing_time:
        alerts.append(Alert("processing_time", f"a document has taken {longest:.0f} s, over "
                            f"max_processing_time {mon.max_processing_time:.0f} s", longest, mon.max_processing_time))
    if (mon.min_throughput > 0 and stats.state == RunState.INGESTING and stats.counts[DocState.PENDING]
            and stats.throughput < mon.min_throughput):
        alerts.append(Alert("throughput", f"{stats.throughput:.2f} docs/s over 5 minutes with "
                            f"{stats.counts[DocState.PENDING]} pending, under min_throughput {mon.min_throughput}",
                            stats.throughput, mon.min_throughput))
    if stats.stale_workers:
        stale = ", ".join(w.worker_id for w in stats.workers if w.state in ("stale", "gone"))
        alerts.append(Alert("stale_workers", f"{stats.stale_workers} worker(s) stopped heartbeating: {stale}",
                            stats.stale_workers, 0))
    if previous_dead is not None and stats.failed_count > previous_dead:
        alerts.append(Alert("dead_letters", f"the dead-letter queue grew from {previous_dead} to "
                            f"{stats.failed_count} since the last check", stats.failed_count, previous_dead))
    return alerts


def check_alerts(backend: Backend, config: Config, run_id: str) -> tuple[ProcessingStats, list[Alert]]:
    """Check every threshold; remembers the dead count so the next check sees the queue's growth."""
    stats = collect(backend, config, run_id)
    previous = backend.swap_alert_state(run_id, stats.failed_count)
    return stats, evaluate(config, stats, previous)


def export(path: Path, data: dict[str, Any]) -> None:
    """Write a snapshot as JSON (atomically: a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def sparkline(values: list[float]) -> str:
    """Values as a line of block characters scaled to their maximum."""
    top = max(values, default=0.0)
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1) + 0.5))] for v in values)


class Dashboard:
    """The ``--live`` screen: queue by state, throughput sparkline, workers, recent errors."""

    def __init__(self, backend: Backend, config: Config, run_id: str, width: int = 60) -> None:
        self.backend, self.config, self.run_id = backend, config, run_id
        self.rates: deque[float] = deque(maxlen=width)
        self._last: tuple[float, int] | None = None

    def render(self) -> Layout:
        """One frame, from fresh database reads."""
        stats = collect(self.backend, self.config, self.run_id)
        finished = stats.counts[DocState.DONE] + stats.counts[DocState.DEAD]
        now = time.monotonic()
        if self._last is not None and now > self._last[0]:
            self.rates.append(max(0, finished - self._last[1]) / (now - self._last[0]))
        self._last = (now, finished)
        errors = self.backend.recent_errors(self.run_id, 8)

        head = Table.grid(padding=(0, 2))
        head.add_row("run", f"{stats.run_id} [bold]{stats.state}[/]", "leader", stats.leader_id or "-")
        head.add_row("workers", f"{stats.active_workers} active, {stats.stale_workers} stale", "chunks",
                     str(stats.chunks))
        queue = Table("state", "documents", box=None)
        for state, n in stats.counts.items():
            queue.add_row(state, str(n))
        rate = Table.grid()
        rate.add_row(f"docs/s  1m {stats.throughput_windows['1m']:.2f}  5m {stats.throughput_windows['5m']:.2f}"
                     f"  15m {stats.throughput_windows['15m']:.2f}")
        rate.add_row(f"[green]{sparkline(list(self.rates))}[/]")
        p95 = f"{stats.p95_processing_time:.2f} s" if stats.p95_processing_time is not None else "-"
        eta = f"{stats.eta_seconds:.0f} s" if stats.eta_seconds else "-"
        rate.add_row(f"p95 per document {p95}   ETA {eta}")
        workers = Table("worker", "state", "beat", "holding", "processed", "failed", box=None)
        for w in stats.workers[:15]:
            style = {"running": "green", "stale": "red", "gone": "red", "stopped": "dim"}[w.state]
            workers.add_row(w.worker_id, f"[{style}]{w.state}[/]", f"{w.seconds_since_beat:.0f}s",
                            str(len(w.holding)), str(w.processed), str(w.failed))
        recent = Table("when", "outcome", "document", "error", box=None)
        for e in errors:
            # Paths and messages are data: Text keeps "[...]" from being read as markup, printable keeps
            # control characters from reaching the terminal.
            recent.add_row(time.strftime("%H:%M:%S", time.localtime(e.finished_at)), e.outcome,
                           Text(printable(e.uri)[-50:]), Text(printable(f"{e.error_class}: {(e.message or '')[:80]}")))
        layout = Layout()
        layout.split_column(Layout(Panel(head, title="docmill monitor (Ctrl-C to quit)"), size=4),
                            Layout(name="middle", size=max(8, len(stats.counts) + 4)),
                            Layout(Panel(workers, title="workers")),
                            Layout(Panel(recent, title="recent errors (last hour)"), size=max(4, len(errors) + 4)))
        layout["middle"].split_row(Layout(Panel(queue, title="queue")),
                                   Layout(Panel(Group(rate), title="throughput")))
        return layout


def live(backend: Backend, config: Config, run_id: str, console: Console, interval: float = 1.0) -> None:
    """Refresh the dashboard every ``interval`` seconds until Ctrl-C."""
    board = Dashboard(backend, config, run_id)
    try:
        with Live(board.render(), console=console, screen=console.is_terminal, auto_refresh=False) as screen:
            while True:
                time.sleep(interval)
                screen.update(board.render(), refresh=True)
    except KeyboardInterrupt:
        return
