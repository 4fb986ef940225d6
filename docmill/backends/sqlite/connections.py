"""SQLite connections that one process keeps open between uses of the same store file.

A fresh connection to a WAL store costs ~0.5 ms before its first row: it opens and maps the
``-wal`` and ``-shm`` files, then parses the whole schema. A process that calls ``ingest`` or
``search`` again and again (an application, a scheduler, a no-change re-run) would pay that on
every call, and search would rebuild its vector matrix each time. So a closed backend hands its
connection back here, and the next backend on the same file takes it over, with what it kept.

A kept connection is only reused while the file is the one it was handed back on, unchanged
(device, inode, size and modification time): a store deleted, replaced or checkpointed by another
process in between gets a new connection. Writes another process has only appended to the WAL
are seen by a kept connection as by a new one. A forked child never touches its parent's
connections (SQLite forbids it), and the kept ones are closed at exit, which checkpoints the WAL
into the file as closing them at once would have.
"""

from __future__ import annotations

import atexit
import os
import sqlite3
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Store files a process keeps a connection to (each holds the file, -wal and -shm open).
MAX_KEPT = 4

_Stamp = tuple[int, int, int, int]


@dataclass
class _Kept:
    conn: sqlite3.Connection
    stamp: _Stamp
    extra: Any


_kept: OrderedDict[str, _Kept] = OrderedDict()
_lock = threading.Lock()
#: Connections inherited through fork(): referenced forever, so the child never closes them.
_inherited: list[_Kept] = []


def _stamp(path: str) -> _Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def take(path: Path) -> tuple[sqlite3.Connection, Any] | None:
    """The connection kept for ``path`` and what was kept with it, if the file is unchanged since."""
    key = os.path.abspath(path)
    with _lock:
        kept = _kept.pop(key, None)
    if kept is None:
        return None
    if kept.stamp != _stamp(key):
        kept.conn.close()
        return None
    return kept.conn, kept.extra


def give_back(path: Path, conn: sqlite3.Connection, extra: Any = None) -> None:
    """Keep ``conn`` (outside any transaction) for the next backend on ``path``, else close it."""
    key = os.path.abspath(path)
    stamp = None if conn.in_transaction else _stamp(key)
    if stamp is None:
        conn.close()
        return
    with _lock:
        replaced = _kept.pop(key, None)
        _kept[key] = _Kept(conn, stamp, extra)
        evicted = [_kept.popitem(last=False)[1] for _ in range(len(_kept) - MAX_KEPT)]
    for old in ([replaced] if replaced else []) + evicted:
        old.conn.close()  # outside the lock: closing the last connection checkpoints the WAL


def close_all() -> None:
    """Close every kept connection (at exit; tests use it to start from none)."""
    with _lock:
        kept = list(_kept.values())
        _kept.clear()
    for item in kept:
        item.conn.close()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it at the fork
    _inherited.extend(_kept.values())
    _kept.clear()


atexit.register(close_all)
os.register_at_fork(after_in_child=_after_fork_in_child)
