"""Shared fixtures: a throwaway PostgreSQL (pgvector included) once per session, fresh databases
per test, and ``backend`` / ``backend_url`` parametrised over SQLite and PostgreSQL.

Set ``DOCMILL_TEST_DATABASE_URL`` to use an existing PostgreSQL instead (it needs pgvector and the
right to CREATE DATABASE); tests that stop and start the server are then skipped.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest

from docmill.backends import open_backend
from docmill.backends.base import Backend
from docmill.config import Config

TEST_DB_ENV = "DOCMILL_TEST_DATABASE_URL"
#: Enough for the 50-worker test (2 connections each) plus the test's own.
MAX_CONNECTIONS = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_database(url: str, dbname: str) -> str:
    """``url`` pointing at another database of the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(dbname, safe="")))


class PgCluster:
    """A throwaway PostgreSQL 16 + pgvector from the ``pgserver`` wheel, listening on a unix socket
    and on 127.0.0.1:<port>, with max_connections raised. Tests may stop and start it."""

    def __init__(self, root: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR in containers
            import pgserver
            from pgserver._commands import pg_ctl
        self._pg_ctl = pg_ctl
        # cleanup_mode=None: this class stops the server itself, because pgserver's own cleanup only
        # knows the process it started and this one restarts it with other options.
        server = pgserver.get_server(root / "pgdata", cleanup_mode=None)
        info = server.get_postmaster_info()
        self.pgdata = server.pgdata
        self.log = server.log
        self.system_user = server.system_user  # pgserver runs postgres as another user under root
        self.socket_dir = str(info.socket_dir)
        self.port = _free_port()
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            # pgserver starts postgres with -h "" (socket only); settings that need a restart go
            # through ALTER SYSTEM, listen_addresses through the command line that overrides it.
            conn.execute(f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS}")
            conn.execute(f"ALTER SYSTEM SET port = {self.port}")
            # Durability against an OS crash is moot for a throwaway cluster; against a crash of
            # PostgreSQL itself (stop(mode="immediate")) it is kept: synchronous_commit stays on.
            conn.execute("ALTER SYSTEM SET fsync = off")
        self._options = f"-h 127.0.0.1 -k {self.socket_dir}"
        self._ctl(["-w", "-m", "fast", "-o", self._options, "-l", str(self.log), "restart"])

    def _ctl(self, args: list[str]) -> None:
        self._pg_ctl(args, pgdata=self.pgdata, user=self.system_user, timeout=60)

    def url(self, dbname: str = "postgres") -> str:
        """A URL over the unix socket."""
        return f"postgresql://postgres@/{dbname}?host={quote(self.socket_dir, safe='/')}&port={self.port}"

    def tcp_url(self, dbname: str = "postgres") -> str:
        """A URL over TCP (127.0.0.1), as a worker on another machine would connect."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` cuts open connections (a failover); ``immediate`` is a crash
        (recovery runs at the next start)."""
        self._ctl(["-w", "-m", mode, "stop"])

    def start(self) -> None:
        """Start the server again with the same options."""
        self._ctl(["-w", "-o", self._options, "-l", str(self.log), "start"])

    def restart(self) -> None:
        """Stop and start."""
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster | None]:
    """The session's own PostgreSQL, or None when ``DOCMILL_TEST_DATABASE_URL`` names an external one."""
    if os.environ.get(TEST_DB_ENV):
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="docmill-pg-"))
    cluster = PgCluster(root)
    try:
        yield cluster
    finally:
        with contextlib.suppress(Exception):  # already stopped by a test that failed half-way
            cluster.stop()


@pytest.fixture(scope="session")
def pg_url(pg_cluster: PgCluster | None) -> str:
    """URL of the test server's ``postgres`` database (where the vector extension is installed)."""
    url = os.environ.get(TEST_DB_ENV) or (pg_cluster.url() if pg_cluster else "")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return url


@pytest.fixture(scope="session")
def pg_tcp_url(pg_cluster: PgCluster | None, pg_url: str) -> str:
    """The same server over TCP (127.0.0.1:<port>), for "two machines" tests."""
    if pg_cluster is None:
        return pg_url
    return pg_cluster.tcp_url()


@pytest.fixture
def pg_server(pg_cluster: PgCluster | None) -> PgCluster:
    """The session's server, for tests that stop and start it (skipped on an external server)."""
    if pg_cluster is None:
        pytest.skip(f"{TEST_DB_ENV} is set: the test cannot restart an external server")
    return pg_cluster


def _create_database(pg_url: str) -> str:
    name = f"docmill_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def _drop_database(pg_url: str, name: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_pg_url(pg_url: str) -> Iterator[str]:
    """A new, empty database on the test server (dropped afterwards), as a socket URL."""
    name = _create_database(pg_url)
    try:
        yield with_database(pg_url, name)
    finally:
        _drop_database(pg_url, name)


@pytest.fixture
def fresh_pg_tcp_url(pg_url: str, pg_tcp_url: str) -> Iterator[str]:
    """A new, empty database on the test server, as a TCP URL."""
    name = _create_database(pg_url)
    try:
        yield with_database(pg_tcp_url, name)
    finally:
        _drop_database(pg_url, name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite store in the test's temporary folder."""
    return f"sqlite:///{tmp_path / 'docmill.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def backend_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty store of each kind (PostgreSQL is started only when a postgres test runs)."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("fresh_pg_url"))


@pytest.fixture
def backend_kind(backend_url: str) -> str:
    """``sqlite`` or ``postgres``."""
    return "postgres" if backend_url.startswith("postgresql://") else "sqlite"


@pytest.fixture
def open_store(backend_url: str) -> Iterator[Any]:
    """A factory opening more backend objects on ``backend_url`` (closed after the test)."""
    opened: list[Backend] = []

    def factory(config: Config | None = None) -> Backend:
        store = open_backend(backend_url, config or Config())
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def backend(backend_url: str) -> Iterator[Backend]:
    """An open store with its schema, on each backend."""
    store = open_backend(backend_url, Config())
    store.init_schema()
    try:
        yield store
    finally:
        store.close()
