"""Local files: a folder (recursive), a single file, or a glob pattern."""

from __future__ import annotations

import glob
import logging
import os
import re
import stat
from collections.abc import Callable, Iterator
from functools import cache
from operator import attrgetter
from pathlib import Path

from docmill.config import SourceConfig, real_path
from docmill.errors import DocumentTooLargeError, DocumentVanishedError, PermanentError, SourceError
from docmill.models import DocumentRef
from docmill.printable import RAW_BYTE_BASE

log = logging.getLogger(__name__)

#: A folder still to list: its path, its key prefix, and the (device, inode) of it and its parents.
_Folder = tuple[str, str, frozenset[tuple[int, int]]]

_ALWAYS_SKIPPED = {".git", ".hg", ".svn", ".docmill", "__pycache__", "node_modules", ".venv"}


@cache
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob where ``**`` crosses folders and ``*`` does not, as a regex on posix paths."""
    pattern = pattern.lstrip("./") if pattern.startswith("./") else pattern
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def matches(rel_path: str, patterns: list[str]) -> bool:
    """Whether a relative posix path matches any glob; a pattern without ``/`` also matches base names."""
    return _matcher(tuple(patterns))(rel_path)


def _takes_all(patterns: tuple[str, ...]) -> bool:
    return any(p in ("**", "**/*") for p in patterns)


@cache
def _matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """One compiled test for a list of globs (discovery calls it for every file)."""
    if not patterns:
        return lambda _rel: False
    if _takes_all(patterns):
        return lambda _rel: True
    whole = re.compile("|".join(f"(?:{_glob_regex(p).pattern})" for p in patterns))
    names = [p for p in patterns if "/" not in p]
    base = re.compile("|".join(f"(?:{_glob_regex(p).pattern})" for p in names)) if names else None

    def test(rel: str) -> bool:
        return bool(whole.match(rel) or (base is not None and base.match(rel.rsplit("/", 1)[-1])))

    return test


# A file name that is not valid UTF-8 reaches Python with its bad bytes as lone surrogates (U+DC80..U+DCFF),
# which no database text column takes. Keys and URIs carry them as private-use characters U+F780..U+F7FF
# instead (one to one, so the file can be opened again); a real name using those is vanishingly rare.
_SURROGATE_TO_TEXT = {0xDC00 + b: RAW_BYTE_BASE + b for b in range(0x80, 0x100)}
_TEXT_TO_SURROGATE = {v: k for k, v in _SURROGATE_TO_TEXT.items()}


def _storable(name: str) -> str:
    """``name`` with undecodable bytes as private-use characters (identity for valid UTF-8)."""
    return name if name.isascii() else name.translate(_SURROGATE_TO_TEXT)


def _on_disk(name: str) -> str:
    """The file-system name a stored key or URI stands for."""
    return name if name.isascii() else name.translate(_TEXT_TO_SURROGATE)


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


class LocalSource:
    """Documents on a local or mounted file system; the key is the path relative to the root."""

    def __init__(self, cfg: SourceConfig) -> None:
        self.name = cfg.name
        self.cfg = cfg
        raw = os.path.expanduser(cfg.base_path)
        self.pattern: str | None = None
        if glob.has_magic(raw):
            # "docs/**/*.md": the root is the part before the first wildcard, the rest is a filter.
            parts = Path(raw).parts
            first = next(i for i, p in enumerate(parts) if glob.has_magic(p))
            self.root = Path(real_path(os.path.join(*parts[:first]))) if first else Path.cwd()
            self.pattern = "/".join(parts[first:])
        else:
            self.root = Path(real_path(raw))
        self._pattern = _matcher((self.pattern,)) if self.pattern else None
        self._included = _matcher(tuple(cfg.include))
        self._excluded = _matcher(tuple(cfg.exclude))
        everything = self._pattern is None and _takes_all(tuple(cfg.include)) and not cfg.exclude
        self._wanted: Callable[[str], bool] | None = None if everything else self._wants

    def check(self) -> None:
        """Raise SourceError unless the root is a listable folder or a regular file."""
        self._root_stat()

    def _root_stat(self) -> os.stat_result:
        """The root's ``stat`` once :meth:`check` passes (SourceError otherwise)."""
        try:
            st = self.root.stat()
        except FileNotFoundError:
            raise SourceError(f"source {self.name!r}: {self.root} does not exist") from None
        except OSError as exc:
            raise SourceError(f"source {self.name!r}: cannot read {self.root} ({exc.strerror})") from None
        if stat.S_ISREG(st.st_mode):
            return st
        if not stat.S_ISDIR(st.st_mode):
            raise SourceError(f"source {self.name!r}: {self.root} is neither a folder nor a regular file "
                              "(a device, FIFO or socket): give a folder, a file or a glob")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise SourceError(f"source {self.name!r}: cannot list folder {self.root} (permission denied)")
        return st

    def discover(self) -> Iterator[DocumentRef]:
        """Walk the root; yields files in a stable order."""
        if stat.S_ISREG((st := self._root_stat()).st_mode):
            yield self._ref(str(self.root), self.root.name, st)
            return
        yield from self._walk(str(self.root))

    def _walk(self, root: str) -> Iterator[DocumentRef]:
        # Iterative, with one folder open at a time: however deep the tree, no recursion limit and
        # no file descriptor per level. A folder is listed whole; its entries are then taken in name
        # order, a sub-folder's files before the next entry.
        stack: list[DocumentRef | _Folder] = [(root, "", frozenset())]
        unreadable: list[str] = []
        while stack:
            item = stack.pop()
            if isinstance(item, DocumentRef):
                yield item
            else:
                stack += reversed(self._list(*item, unreadable))
        if unreadable:
            # Raised after the walk, so every readable file is still found; the caller must not take
            # the files under these folders for deleted (SourceError keeps the stored documents).
            shown = ", ".join(unreadable[:3]) + (f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else "")
            raise SourceError(f"source {self.name!r}: cannot list folder {shown}")

    def _list(self, folder: str, prefix: str, visiting: frozenset[tuple[int, int]],
              unreadable: list[str]) -> list[DocumentRef | _Folder]:
        """One folder's wanted files (as refs) and sub-folders (to list next), in name order; a folder
        that cannot be listed is added to ``unreadable``."""
        # Plain strings, DirEntry types and locals bound once: a no-change re-run is little more than
        # this walk. Listing through a descriptor makes each stat() resolve one name, not the path.
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            unreadable.append(f"{_storable(folder)} ({exc.strerror or exc})")
            return []
        try:
            st = os.fstat(fd)
            ident = (st.st_dev, st.st_ino)
            if ident in visiting:
                return []  # a symlink pointing back up the tree
            visiting = visiting | {ident}
            with os.scandir(fd) as listing:
                entries = sorted(listing, key=attrgetter("name"))
            return self._items(folder.rstrip("/") + "/", prefix, entries, visiting)
        except OSError as exc:
            unreadable.append(f"{_storable(folder)} ({exc.strerror or exc})")
            return []
        finally:
            os.close(fd)

    def _items(self, base: str, prefix: str, entries: list[os.DirEntry[str]],
               visiting: frozenset[tuple[int, int]]) -> list[DocumentRef | _Folder]:
        """The refs and sub-folders among one folder's entries; ``base`` is its path with a trailing slash."""
        hidden, follow = self.cfg.include_hidden, self.cfg.follow_symlinks
        wanted, excluded = self._wanted, self._excluded
        items: list[DocumentRef | _Folder] = []
        for entry in entries:
            name = entry.name
            if name in _ALWAYS_SKIPPED or (not hidden and name.startswith(".")):
                continue
            rel = prefix + name
            try:
                # Files first: they are most entries, and is_file() reads the entry's type for free.
                if entry.is_file():
                    if (follow or not entry.is_symlink()) and (wanted is None or wanted(rel)):
                        items.append(self._ref(base + name, rel, entry.stat()))
                elif entry.is_dir():
                    if (follow or not entry.is_symlink()) and not excluded(rel + "/") and not excluded(rel):
                        items.append((base + name, rel + "/", visiting))
                elif wanted is None or wanted(rel):
                    # A FIFO would block a reader forever and a device never ends: named, never read.
                    log.warning("skipped %s: not a regular file (a device, FIFO, socket or broken link)",
                                base + name)
            except OSError:
                continue  # dangling link or a file removed while walking
        return items

    def _wants(self, rel: str) -> bool:
        if self._pattern is not None and not self._pattern(rel):
            return False
        return self._included(rel) and not self._excluded(rel)

    def _ref(self, path: str, rel: str, st: os.stat_result) -> DocumentRef:
        size = st.st_size
        return DocumentRef(self.name, _storable(rel), _storable(path), size, f"{size}:{st.st_mtime_ns}")

    def _path(self, key: str) -> Path:
        return self.root if self.root.is_file() else self.root / _on_disk(key)

    def fetch(self, key: str) -> bytes:
        """Read a file, refusing it when it is larger than ``max_file_size``."""
        path = self._path(key)
        shown = _storable(str(path))  # error messages are stored: no lone surrogates in them
        limit = self.cfg.max_file_size
        try:
            st = path.stat()
            if not stat.S_ISREG(st.st_mode):
                raise PermanentError(f"{shown} is not a regular file")
            if st.st_size > limit:
                raise DocumentTooLargeError(f"file is {_human(st.st_size)}, over max_file_size {_human(limit)}")
            with path.open("rb") as fh:
                # Sized to the file: read(n) allocates n bytes first, and mapping then unmapping a
                # max_file_size buffer per small file cost ~4 ms of kernel time each, stalling the
                # embedder's threads. A file that grew since its stat is read on up to the limit.
                data = fh.read(st.st_size + 1)
                if len(data) > st.st_size:
                    data += fh.read(limit + 1 - len(data))
        except FileNotFoundError:
            raise DocumentVanishedError(f"{shown} disappeared after it was discovered") from None
        except PermissionError:
            raise PermanentError(f"cannot read {shown}: permission denied") from None
        except IsADirectoryError:
            raise PermanentError(f"{shown} is a folder, not a file") from None
        except OSError as exc:
            raise PermanentError(f"cannot read {shown}: {exc.strerror or exc}") from None
        if len(data) > limit:
            raise DocumentTooLargeError(f"file grew past max_file_size {_human(limit)} while reading")
        return data
