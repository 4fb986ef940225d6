"""Real worker processes, real kills, and the exactly-once checks run afterwards on the store."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TOPICS = ["glaciers", "volcanoes", "bees", "lighthouses", "submarines", "orchids", "comets", "castles",
          "tides", "falcons", "deserts", "violins"]


def write_small_corpus(root: Path, n: int, paragraphs: int = 1) -> None:
    """``n`` distinct text files of ``paragraphs`` paragraphs (about one chunk per paragraph)."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        body = "\n\n".join(
            f"This note number {i}, part {p}, records fact {(i * 7 + p) % 101} about {topic}; it was written "
            f"for the chaos test and mentions {topic} {i % 5 + 1} times. " * 9 for p in range(paragraphs))
        (root / f"doc_{i:04d}.txt").write_text(f"Note {i} about {topic}\n\n{body}\n")


def write_config(path: Path, docs: Path, db_url: str, **workers: Any) -> Path:
    """A config with short leases so killed workers' documents come back quickly."""
    config = {
        "storage": {"backend": "postgresql", "url": db_url} if db_url.startswith("postgres")
        else {"backend": "sqlite", "path": db_url.removeprefix("sqlite:///")},
        "content_sources": [{"name": "docs", "path": str(docs)}],
        "workers": {"claim_timeout": 3, "heartbeat_interval": 1, "poll_interval": 0.5, "claim_batch_size": 2,
                    "retry_delay": 0, "max_retries": 8, **workers},
        "logging": {"level": "WARNING"},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Fleet:
    """Worker processes started as separate ``docmill ingest`` commands (as on separate machines)."""

    config: Path
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    tag: str = ""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    killed: int = 0

    def start(self, count: int = 1, extra_args: list[str] | None = None) -> None:
        """Start ``count`` more ``docmill ingest`` commands (each runs one worker unless --workers is given)."""
        for _ in range(count):
            log = open(self.cwd / f"worker-{self.tag}{len(self.procs)}.log", "wb")  # noqa: SIM115 - kept by Popen
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "docmill", "ingest", str(self.config), "--json", *(extra_args or [])],
                cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}))

    def alive(self) -> list[subprocess.Popen[bytes]]:
        """Workers still running."""
        return [p for p in self.procs if p.poll() is None]

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Send a signal to one worker."""
        proc.send_signal(sig)
        if sig == signal.SIGKILL:
            proc.wait()
            self.killed += 1

    def wait(self, timeout: float) -> None:
        """Wait for every worker to exit; fail with their logs if they do not."""
        deadline = time.monotonic() + timeout
        for p in self.procs:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                p.wait(remaining)
            except subprocess.TimeoutExpired:
                self.stop_all()
                raise AssertionError(f"workers did not finish in {timeout}s:\n{self.logs()}") from None

    def stop_all(self) -> None:
        """Kill whatever still runs (test clean-up)."""
        for p in self.alive():
            p.kill()
            p.wait()

    def logs(self) -> str:
        """Every worker's output, for assertion messages."""
        return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-3000:]}"
                         for f in sorted(self.cwd.glob("worker-*.log")))


def query(db_url: str, sql: str) -> list[tuple[Any, ...]]:
    """Run one read-only query on either backend."""
    if db_url.startswith("postgres"):
        import psycopg

        with psycopg.connect(db_url) as conn:
            return [tuple(r) for r in conn.execute(sql).fetchall()]
    conn = sqlite3.connect(db_url.removeprefix("sqlite:///"))
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def assert_exactly_once(db_url: str, expected_docs: int) -> None:
    """Every document done once, chunks complete without duplicates, the run complete and finalized once."""
    states = dict(query(db_url, "SELECT state, count(*) FROM documents GROUP BY state"))
    assert states == {"done": expected_docs}, (
        states, query(db_url, "SELECT uri, attempts, error_class, last_error FROM documents WHERE state <> 'done'"))
    completions = query(db_url, "SELECT document_id, count(*) FROM attempts WHERE outcome = 'done' "
                                "GROUP BY document_id")
    assert len(completions) == expected_docs
    assert {n for _, n in completions} == {1}, [r for r in completions if r[1] != 1]
    chunk_check = query(db_url, """
        SELECT d.id, d.chunk_count, count(c.id), count(DISTINCT c.ordinal), min(c.ordinal), max(c.ordinal)
        FROM documents d LEFT JOIN chunks c ON c.document_id = d.id
        GROUP BY d.id, d.chunk_count""")
    bad = [r for r in chunk_check if not (r[1] == r[2] == r[3] > 0 and r[4] == 0 and r[5] == r[1] - 1)]
    assert not bad, f"documents with missing or duplicate chunks: {bad[:5]}"
    runs = query(db_url, "SELECT state, finalize_count FROM runs")
    assert runs == [("complete", 1)], runs
