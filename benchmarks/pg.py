"""PostgreSQL for the benchmarks: a given server, or a throwaway one from the pgserver wheel."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg


@contextmanager
def postgres(url: str | None, tmp: Path) -> Iterator[str]:
    """Yield ``url``, or start a throwaway PostgreSQL under ``tmp`` and stop it on the way out
    (before ``tmp`` goes: a server whose data folder vanished would keep running)."""
    if url:
        yield url
        return
    import pgserver

    with pgserver.get_server(tmp / "pg", cleanup_mode="stop") as server:
        yield server.get_uri()


def fresh_database(base: str, name: str) -> str:
    """Create an empty database ``name`` on the server of ``base`` (dropping an old one); its URL."""
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    if "/postgres?" in base:
        return base.replace("/postgres?", f"/{name}?")
    return base.rsplit("/", 1)[0] + f"/{name}"
