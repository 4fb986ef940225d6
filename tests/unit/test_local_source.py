"""The local source: what a walk lists, in what order, and what its globs take or skip."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from docmill.config import SourceConfig
from docmill.errors import DocumentTooLargeError, SourceError
from docmill.sources.local import LocalSource, matches


def _tree(root: Path) -> None:
    for rel in ("a.md", "b.txt", "sub/c.md", "sub/deep/d.pdf", "sub/.hidden.md", ".git/config",
                "node_modules/x.js", "build/out.md"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)


def _keys(root: Path, **kwargs: object) -> list[str]:
    return [r.key for r in LocalSource(SourceConfig(name="s", path=str(root), **kwargs)).discover()]


@pytest.mark.parametrize(("rel", "patterns", "expected"), [
    ("a.md", ["**/*"], True),
    ("sub/deep/d.pdf", ["**"], True),
    ("sub/c.md", ["*.md"], True),            # no "/": the base name is matched too
    ("sub/c.md", ["sub/*.md"], True),
    ("sub/deep/d.md", ["sub/*.md"], False),  # "*" stays within one folder
    ("sub/deep/d.md", ["sub/**/*.md"], True),
    ("sub/deep/d.md", ["**/deep/*"], True),
    ("b.txt", ["*.md", "*.pdf"], False),
    ("b.txt", ["*.md", "?.txt"], True),
    ("b.txt", [], False),
])
def test_glob_matching(rel: str, patterns: list[str], expected: bool) -> None:
    assert matches(rel, patterns) is expected


def test_walk_lists_files_in_order_and_skips_hidden_and_tool_folders(tmp_path: Path) -> None:
    _tree(tmp_path)
    assert _keys(tmp_path) == ["a.md", "b.txt", "build/out.md", "sub/c.md", "sub/deep/d.pdf"]
    assert "sub/.hidden.md" in _keys(tmp_path, include_hidden=True)
    assert ".git/config" not in _keys(tmp_path, include_hidden=True)


def test_include_exclude_and_glob_roots(tmp_path: Path) -> None:
    _tree(tmp_path)
    assert _keys(tmp_path, include=["*.md"], exclude=["build"]) == ["a.md", "sub/c.md"]
    assert _keys(tmp_path, exclude=["sub/**"]) == ["a.md", "b.txt", "build/out.md"]
    assert [r.key for r in LocalSource(SourceConfig(name="s", path=f"{tmp_path}/sub/**/*.pdf")).discover()] \
        == ["deep/d.pdf"]


def test_a_ref_carries_path_size_and_version(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("hello")
    (ref,) = LocalSource(SourceConfig(name="s", path=str(tmp_path))).discover()
    st = (tmp_path / "a.md").stat()
    assert (ref.uri, ref.size, ref.version) == (str(tmp_path / "a.md"), 5, f"5:{st.st_mtime_ns}")
    (single,) = LocalSource(SourceConfig(name="s", path=str(tmp_path / "a.md"))).discover()
    assert (single.key, single.uri) == ("a.md", str(tmp_path / "a.md"))


def test_a_symlink_loop_is_walked_once(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.md").write_text("x")
    os.symlink(tmp_path, tmp_path / "sub" / "back")
    assert _keys(tmp_path, follow_symlinks=True) == ["sub/x.md"]
    assert _keys(tmp_path) == ["sub/x.md"]


def test_a_tree_deeper_than_the_recursion_limit_is_walked(tmp_path: Path) -> None:
    depth = sys.getrecursionlimit() + 100  # a walk that recursed per level would raise RecursionError
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        for _ in range(depth):  # relative to a descriptor: fast, and no path grows with the depth
            os.mkdir("d", dir_fd=fd)
            deeper = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        os.close(os.open("leaf.md", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    finally:
        os.close(fd)
    (tmp_path / "z.md").write_text("z")  # after the deep branch: the walk goes on past it
    try:
        assert _keys(tmp_path) == ["d/" * depth + "leaf.md", "z.md"]
    finally:
        _remove_chain(tmp_path / "d")


def _remove_chain(top: Path) -> None:
    """Delete a chain of nested ``d`` folders one level at a time: shutil.rmtree (pytest's clean-up
    of old temporary folders) recurses per level and would raise RecursionError on it."""
    spare = top.with_name("spare")
    while (top / "d").is_dir():
        (top / "d").rename(spare)
        top.rmdir()
        spare.rename(top)
    (top / "leaf.md").unlink()
    top.rmdir()


def test_siblings_and_sub_folders_come_in_name_order(tmp_path: Path) -> None:
    for rel in ("b/2.md", "a.md", "b/1/x.md", "c.md", "b/0.md", "b-c.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    assert _keys(tmp_path) == ["a.md", "b/0.md", "b/1/x.md", "b/2.md", "b-c.md", "c.md"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can list a chmod 000 folder")
def test_an_unreadable_sub_folder_is_an_error_after_every_readable_file(tmp_path: Path) -> None:
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "plan.md").write_text("# Plan\n")
    (tmp_path / "zeta.md").write_text("# Zeta\n")
    (tmp_path / "team").chmod(0)
    try:
        source = LocalSource(SourceConfig(name="docs", path=str(tmp_path)))
        found = []
        with pytest.raises(SourceError, match=r"cannot list folder .*team"):
            found.extend(r.key for r in source.discover())
        assert found == ["zeta.md"]  # the readable rest was still listed: stored documents are kept
    finally:
        (tmp_path / "team").chmod(0o755)


def test_a_root_that_is_no_folder_or_file_is_refused_before_listing(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    for root, reason in ((tmp_path / "pipe", "neither a folder nor a regular file"),
                         (Path(os.devnull), "neither a folder nor a regular file"),
                         (tmp_path / "missing", "does not exist")):
        source = LocalSource(SourceConfig(name="s", path=str(root)))
        with pytest.raises(SourceError, match=reason):
            source.check()
        with pytest.raises(SourceError, match=reason):
            list(source.discover())
    LocalSource(SourceConfig(name="s", path=str(tmp_path))).check()  # a folder and a file pass
    (tmp_path / "a.md").write_text("# A\n")
    LocalSource(SourceConfig(name="s", path=str(tmp_path / "a.md"))).check()


def test_fifos_devices_and_broken_links_inside_are_named_and_never_read(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "a.md").write_text("# A\n")
    os.mkfifo(tmp_path / "pipe.md")
    (tmp_path / "zero.md").symlink_to(os.devnull)
    (tmp_path / "dangling.md").symlink_to(tmp_path / "nowhere.md")
    with caplog.at_level("WARNING", logger="docmill.sources.local"):
        assert _keys(tmp_path) == ["a.md"]
    skipped = sorted(Path(r.args[0]).name for r in caplog.records)  # type: ignore[index, arg-type]
    assert skipped == ["dangling.md", "pipe.md", "zero.md"]


@pytest.mark.parametrize(("grown_to", "too_large"), [(3000, False), (5000, True)])
def test_a_file_that_grows_after_its_stat_is_read_whole_or_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   grown_to: int, too_large: bool) -> None:
    """fetch reads as many bytes as the stat promised; a file appended to since is read on, up to the limit."""
    path = tmp_path / "log.txt"
    path.write_bytes(b"a" * 1000)
    before = path.stat()
    with path.open("ab") as fh:  # another process appends between fetch's stat and its read
        fh.write(b"b" * (grown_to - 1000))
    real_stat = Path.stat
    monkeypatch.setattr(Path, "stat", lambda self, **kw: before if self == path else real_stat(self, **kw))
    source = LocalSource(SourceConfig(name="s", path=str(tmp_path), max_file_size=4000))
    if too_large:
        with pytest.raises(DocumentTooLargeError, match="grew past max_file_size"):
            source.fetch("log.txt")
    else:
        assert source.fetch("log.txt") == b"a" * 1000 + b"b" * (grown_to - 1000)
