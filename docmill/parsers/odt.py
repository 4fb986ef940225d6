"""ODT (OpenDocument text): content.xml read as a stream, headings by outline level build paths, lists
as `- item` lines, tables as `a | b` lines.

As for DOCX, the body is read and the rest left out: comments, footnotes, tracked changes (whose
deleted text the file keeps), frames and shapes (text boxes, images, captions) and nested tables.
"""

from __future__ import annotations

from typing import Any

from docmill.models import ParsedDocument
from docmill.parsers.detect import file_stem
from docmill.parsers.package import MAX_EXPANDED_BYTES, CoreReader, Package, number, read_package
from docmill.parsers.text import SectionWriter, one_line

MIME = "application/vnd.oasis.opendocument.text"

_CONTENT = "content.xml"
_META = "meta.xml"
_MANIFEST = "META-INF/manifest.xml"
# text:s stands for a run of spaces of any declared length; a readable line never needs more.
_MAX_SPACES = 100

_OFFICE = "urn:oasis:names:tc:opendocument:xmlns:office:1.0}"
_TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
_TABLE = "urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
_DRAW = "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0}"
_META_NS = "urn:oasis:names:tc:opendocument:xmlns:meta:1.0}"
_MANIFEST_NS = "urn:oasis:names:tc:opendocument:xmlns:manifest:1.0}"
_XLINK_HREF = "http://www.w3.org/1999/xlink}href"
_PARAGRAPHS = frozenset({_TEXT + "p", _TEXT + "h"})
# Elements read past, with everything inside them (see the module docstring); draw:* elements are too.
_SKIPPED = frozenset({
    _OFFICE + "annotation",
    _TEXT + "note",
    _TEXT + "tracked-changes",
    _TEXT + "ruby-text",  # a reading aid printed above the text it annotates
    _TABLE + "covered-table-cell",  # covered by a merged cell, which is written once
})
# Wrappers whose first paragraph is a list item.
_ITEMS = frozenset({_TEXT + "list-item", _TEXT + "numbered-paragraph"})
_CHARACTERS = {_TEXT + "tab": "\t", _TEXT + "line-break": "\n"}


def parse(data: bytes, name: str) -> ParsedDocument:
    """Parse an ODT; a package that cannot be read raises CorruptDocumentError."""
    return read_package(data, name, "ODT", lambda package: _read(package, name), MAX_EXPANDED_BYTES)


def _read(package: Package, name: str) -> ParsedDocument:
    """Read the metadata, then stream the body of content.xml through a _ContentReader."""
    if _is_encrypted(package):
        raise ValueError(f"{_CONTENT} is encrypted (password-protected)")
    core = CoreReader(author_tag=_META_NS + "initial-creator")
    if _META in package.members:
        package.stream(_META, core.start, core.end, core.data)
    body = _ContentReader()
    package.stream(_CONTENT, body.start, body.end, body.data)
    body.writer.flush()
    metadata: dict[str, Any] = {"author": core.author} if core.author else {}
    return ParsedDocument(title=core.title or body.first_heading or file_stem(name), sections=body.writer.sections,
                          mime=MIME, metadata=metadata, links=list(body.links))


def _is_encrypted(package: Package) -> bool:
    """True when the manifest says content.xml is encrypted (its bytes would read as broken XML)."""
    if _MANIFEST not in package.members:
        return False
    entry = ""
    encrypted = False

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal entry, encrypted
        if tag == _MANIFEST_NS + "file-entry":
            entry = attrs.get(_MANIFEST_NS + "full-path", "")
        elif tag == _MANIFEST_NS + "encryption-data" and entry == _CONTENT:
            encrypted = True

    package.stream(_MANIFEST, start)
    return encrypted


class _ContentReader:
    """Writes the paragraphs and table rows of office:text to a SectionWriter as expat reads them.

    Sections, lists and tables nest freely in ODF, so elements are told by tag rather than by place;
    memory holds the text of one paragraph or table row and the depth of the open elements.
    """

    def __init__(self) -> None:
        self.writer = SectionWriter()
        self.first_heading: str | None = None
        self.links: dict[str, None] = {}  # targets in document order, each once
        self._depth = 0
        self._skipped_at: int | None = None  # depth of the skipped element being read past
        self._in_body = False  # inside office:text: styles and settings hold no text of the document
        self._text: list[str] | None = None  # of the open paragraph
        self._level: int | None = None  # heading level of the open paragraph
        self._bullet = False  # the open paragraph is a list item's first
        self._item_pending = False
        self._cell: list[str] | None = None  # paragraph texts of the open table cell
        self._row: list[str] | None = None

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        self._depth += 1
        if self._skipped_at is not None:
            return
        if tag in _SKIPPED or tag.startswith(_DRAW) or (tag == _TABLE + "table" and self._cell is not None):
            self._skipped_at = self._depth
        elif tag == _OFFICE + "text":
            self._in_body = True
        elif not self._in_body:
            return
        elif tag in _PARAGRAPHS:
            self._text = []
            heading = tag == _TEXT + "h"
            self._level = max(1, number(attrs.get(_TEXT + "outline-level"), 1)) if heading else None
            self._bullet, self._item_pending = self._item_pending, False
        elif self._text is not None:
            if tag == _TEXT + "a":
                self._link(attrs.get(_XLINK_HREF, ""))
            elif tag == _TEXT + "s":
                self._text.append(" " * min(max(number(attrs.get(_TEXT + "c"), 1), 1), _MAX_SPACES))
            else:
                self._text.append(_CHARACTERS.get(tag, ""))
        elif tag in _ITEMS:
            self._item_pending = True
        elif tag == _TABLE + "table-row":
            self._row = []
        elif tag == _TABLE + "table-cell":
            self._cell = []

    def _link(self, target: str) -> None:
        """Keep a link's target, unless it points inside the document (to a bookmark or heading)."""
        target = target.strip()
        if target and not target.startswith("#"):
            self.links.setdefault(target)

    def data(self, text: str) -> None:
        if self._text is not None and self._skipped_at is None:
            self._text.append(text)

    def end(self, tag: str) -> None:
        depth = self._depth
        self._depth -= 1
        if self._skipped_at is not None:
            if depth == self._skipped_at:
                self._skipped_at = None
            return
        if tag in _PARAGRAPHS and self._text is not None:
            self._end_paragraph("".join(self._text))
            self._text = None
        elif tag == _TABLE + "table-cell" and self._cell is not None:
            if self._row is not None:
                self._row.append(one_line(" ".join(self._cell)))
            self._cell = None
        elif tag == _TABLE + "table-row" and self._row is not None:
            if any(self._row):
                self.writer.add(" | ".join(self._row))
            self._row = None
        elif tag in _ITEMS:
            self._item_pending = False
        elif tag == _OFFICE + "text":
            self._in_body = False

    def _end_paragraph(self, text: str) -> None:
        if self._cell is not None:
            self._cell.append(text)
            return
        text = text.strip()
        if not text:
            return
        if self._level is not None:
            heading = one_line(text)
            self.first_heading = self.first_heading or heading
            self.writer.heading(self._level, heading)
        elif self._bullet:
            self.writer.add(f"- {text}")
        else:
            self.writer.add(text)
