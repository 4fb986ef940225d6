"""The leader's discovery pass over a real folder, on both backends: an unchanged source is only
compared (nothing written), and vanished files are still found and removed."""

from __future__ import annotations

import os
from pathlib import Path

from docmill.backends.base import Backend
from docmill.config import SourceConfig
from docmill.leader import DiscoveryReport, discover
from docmill.sources.local import LocalSource

RUN = "run-discovery"


def _pass(backend: Backend, folder: Path, generation: int) -> DiscoveryReport:
    backend.open_run(RUN, "{}")
    return discover(backend, RUN, generation, {"docs": LocalSource(SourceConfig(name="docs", path=str(folder)))},
                    lambda: True)


def _stamps(backend: Backend) -> dict[str, int]:
    """Each document's key → the discovery pass that last stamped it as seen."""
    conn = backend.conn  # type: ignore[attr-defined]
    if backend.url.startswith("sqlite"):
        return dict(conn.execute("SELECT doc_key, seen_gen FROM documents").fetchall())
    with conn.transaction():
        return dict(conn.execute("SELECT doc_key, seen_gen FROM documents").fetchall())


def test_unchanged_source_is_compared_not_written_and_vanished_files_are_removed(backend: Backend,
                                                                                tmp_path: Path) -> None:
    folder = tmp_path / "docs"  # not tmp_path itself: the SQLite store lives there
    folder.mkdir()
    for name in "abcd":
        (folder / f"{name}.txt").write_text(f"file {name}")
    first = _pass(backend, folder, 1)
    assert (first.new, first.unchanged, first.removed, first.completed) == (4, 0, 0, True)

    again = _pass(backend, folder, 2)
    assert (again.new, again.changed, again.unchanged, again.removed) == (0, 0, 4, 0)
    assert set(_stamps(backend).values()) == {1}, "an unchanged re-run writes no document row"

    # One file vanishes while another appears: the count alone would match, so the pass must not
    # take "as many stored as listed" from before the new file was added.
    (folder / "b.txt").unlink()
    (folder / "e.txt").write_text("file e")
    (folder / "c.txt").write_text("file c, longer now")
    third = _pass(backend, folder, 3)
    assert (third.new, third.changed, third.unchanged, third.removed) == (1, 1, 2, 1)
    assert sorted(_stamps(backend)) == ["a.txt", "c.txt", "d.txt", "e.txt"]


def test_a_file_name_that_is_not_utf8_is_stored_and_read_back(backend: Backend, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    raw = os.path.join(os.fsencode(folder), b"caf\xe9 menu.txt")  # Latin-1 bytes, invalid as UTF-8
    with open(raw, "wb") as fh:
        fh.write(b"soup of the day")
    first = _pass(backend, folder, 1)
    assert first.new == 1
    (key,) = _stamps(backend)
    assert key.encode("utf-8") and key.startswith("caf") and key.endswith(" menu.txt")
    source = LocalSource(SourceConfig(name="docs", path=str(folder)))
    assert source.fetch(key) == b"soup of the day"
    again = _pass(backend, folder, 2)
    assert (again.new, again.changed, again.unchanged) == (0, 0, 1)
