"""What reaches a terminal from file names and document text."""

from __future__ import annotations

import logging
from pathlib import Path

from docmill.config import SourceConfig
from docmill.observability import _TextFormatter
from docmill.printable import printable
from docmill.sources.local import LocalSource


def test_control_characters_are_shown_not_obeyed() -> None:
    hostile = "a\x1b]0;title\x07b\x1b[2Jc\rd\u202ee\x9bf\x7f"
    assert printable(hostile) == "a\\x1b]0;title\\x07b\\x1b[2Jc\\rd\\u202ee\\x9bf\\x7f"
    assert printable("two\nlines\tand tab") == "two\\nlines\\tand tab"
    assert printable("two\nlines", one_line=False) == "two\nlines"
    assert printable("plain text, ünïcödé — 東京") == "plain text, ünïcödé — 東京"


def test_a_file_name_that_is_not_utf8_shows_its_bytes(tmp_path: Path) -> None:
    (tmp_path / b"caf\xe9.txt".decode("utf-8", "surrogateescape")).write_text("a latin-1 name")
    (ref,) = LocalSource(SourceConfig(name="s", path=str(tmp_path))).discover()
    assert printable(ref.uri).endswith("/caf\\xe9.txt")


def test_a_log_line_cannot_be_forged_by_a_file_name() -> None:
    record = logging.LogRecord("docmill", logging.WARNING, __file__, 1, "removed %s", ("a\nFAKE ERROR\x1b[31m",), None)
    line = _TextFormatter(with_worker=False).format(record)
    assert "\n" not in line and "\x1b" not in line and "a\\nFAKE ERROR\\x1b[31m" in line
