"""Open the store named by a URL: ``sqlite:///path``, a plain file path, or ``postgresql://…``."""

from __future__ import annotations

import os
from pathlib import Path

from docmill.backends.base import Backend
from docmill.config import Config, redact_url
from docmill.errors import ConfigError, StoreError

ENV_URL = "DOCMILL_DATABASE_URL"


def database_url(config: Config, override: str | None = None) -> str:
    """The store to use: ``--db``, then ``$DOCMILL_DATABASE_URL``, then the config's ``storage``."""
    return override or os.environ.get(ENV_URL) or config.storage.database_url()


def open_backend(url: str, config: Config | None = None, *, create: bool = True) -> Backend:
    """Connect to the store at ``url`` (PostgreSQL support is imported only when used).

    ``create=False`` refuses a SQLite file that does not exist yet instead of creating an empty one.
    """
    if url.startswith(("postgresql://", "postgres://")):
        from docmill.backends.postgres import PostgresBackend

        return PostgresBackend(url, config or Config())
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://").removeprefix("/") if url.startswith("sqlite:///") else ""
        if not path:
            raise ConfigError(f"database URL {url!r}: write sqlite:///relative/path.db or sqlite:////abs/path.db")
        from docmill.backends.sqlite import SQLiteBackend

        return SQLiteBackend(path, create=create)
    if "://" in url:
        raise ConfigError(f"database URL {url!r}: use sqlite:///file.db or postgresql://user@host/db")
    from docmill.backends.sqlite import SQLiteBackend

    return SQLiteBackend(Path(url), create=create)


def open_store(url: str, config: Config | None = None) -> Backend:
    """Connect to a store that ``docmill ingest`` (or ``init-db``) made; never create one.

    Reading commands use this: pointed at the wrong file or database they say so, instead of failing
    on a missing table or leaving an empty store file behind.
    """
    backend = open_backend(url, config, create=False)
    if backend.schema_version() == 0:
        backend.close()
        raise StoreError(f"{redact_url(url)} holds no docmill store (it has none of docmill's tables): point --db "
                         "(or storage) at the store `docmill ingest` filled, or run `docmill ingest FOLDER` first")
    return backend
