"""The leader's discovery pass over a real folder, on both backends: an unchanged source is only
compared (nothing written), and vanished files are still found and removed."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from docmill import leader
from docmill.backends.base import Backend
from docmill.config import SourceConfig
from docmill.errors import SourceError
from docmill.leader import DiscoveryReport, discover, sources_unchanged
from docmill.models import DocumentRef
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


@pytest.mark.parametrize("whole_listing", [10_000, 2], ids=["one-read", "batched"])
def test_sources_unchanged_sees_every_kind_of_difference(backend: Backend, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, whole_listing: int) -> None:
    # With a limit of 2 the source's 4-5 stored documents are compared batch by batch instead.
    monkeypatch.setattr(leader, "WHOLE_LISTING", whole_listing)
    monkeypatch.setattr(leader, "UPSERT_BATCH", 2)
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.txt", "b.txt", "sub/c.txt", "sub/d.txt"):
        (folder / name).write_text(f"file {name}")
    _pass(backend, folder, 1)
    sources = {"docs": LocalSource(SourceConfig(name="docs", path=str(folder)))}
    assert sources_unchanged(backend, sources, RUN)
    generations = itertools.count(2)

    def differs(change: str) -> bool:
        """Whether the check sees a difference after ``change``, and a pass stores it again."""
        seen = not sources_unchanged(backend, sources, RUN)
        _pass(backend, folder, next(generations))
        assert sources_unchanged(backend, sources, RUN), f"after {change} a pass brings the store level"
        return seen

    (folder / "sub/e.txt").write_text("new")
    assert differs("a new file")
    (folder / "a.txt").write_text("file a, edited to a new length")
    assert differs("an edited file")
    (folder / "b.txt").unlink()
    assert differs("a removed file")
    (folder / "sub/c.txt").rename(folder / "c.txt")
    assert differs("a moved file")
    assert not sources_unchanged(backend, {"docs": LocalSource(SourceConfig(name="docs", path=str(tmp_path / "gone")))},
                                 RUN), "a source that cannot be listed is not unchanged"


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


def test_a_path_too_long_to_index_is_skipped_with_a_warning(backend: Backend, tmp_path: Path) -> None:
    # PostgreSQL cannot index a key over ~2.7 kB (the whole ingest used to fail on one such file);
    # both backends skip it, name it, and store everything else.
    folder = tmp_path / "docs"
    deep = folder.joinpath(*[f"{i:02d}" + "x" * 198 for i in range(11)])  # 11 x 201 bytes > MAX_KEY_BYTES
    deep.mkdir(parents=True)
    (deep / "leaf.md").write_text("too deep to store")
    (folder / "ok.md").write_text("fine")
    report = _pass(backend, folder, 1)
    assert (report.new, report.skipped, report.completed) == (1, 1, True)
    assert len(report.warnings) == 1 and "leaf.md" in report.warnings[0] and "2000" in report.warnings[0]
    assert sorted(_stamps(backend)) == ["ok.md"]
    sources = {"docs": LocalSource(SourceConfig(name="docs", path=str(folder)))}
    assert sources_unchanged(backend, sources, RUN), "the skipped file does not make every re-run a full one"


class _FailsPartWay:
    """A local folder whose listing fails after its first ``listed`` files, as one with an
    unreadable sub-folder does."""

    name = "docs"

    def __init__(self, folder: Path, listed: int) -> None:
        self._inner = LocalSource(SourceConfig(name="docs", path=str(folder)))
        self._listed = listed

    def discover(self) -> Iterator[DocumentRef]:
        yield from itertools.islice(self._inner.discover(), self._listed)
        raise SourceError("source 'docs': cannot list folder team (Permission denied)")

    def fetch(self, key: str) -> bytes:
        return self._inner.fetch(key)


def test_a_listing_that_fails_part_way_enqueues_what_it_listed_and_removes_nothing(backend: Backend,
                                                                                   tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in "abcd":
        (folder / f"{name}.txt").write_text(f"file {name}")
    _pass(backend, folder, 1)
    (folder / "a0.txt").write_text("new, and listed before the failure")
    (folder / "d.txt").unlink()  # cannot be told apart from a file in the unreadable folder
    report = discover(backend, RUN, 2, {"docs": _FailsPartWay(folder, 2)}, lambda: True)  # a.txt, a0.txt
    assert (report.new, report.removed) == (1, 0)
    assert any("cannot list folder team" in w and "kept" in w for w in report.warnings), report.warnings
    assert sorted(_stamps(backend)) == ["a.txt", "a0.txt", "b.txt", "c.txt", "d.txt"]
