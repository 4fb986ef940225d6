"""DOCX: the package's XML read as a stream, body in document order, headings build paths, tables
become `a | b` lines.

The parts are read with expat, one event per tag and nothing kept but the text: python-docx built
the whole tree and walked it in Python, and a 120 KB file of ten million empty paragraphs took three
minutes and 1.4 GB. What is read matches what python-docx gave: paragraph text from runs and
hyperlinks (tracked changes, text boxes and nested tables left out), styles followed up their
``basedOn`` chain, merged table cells written once per row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from docmill.models import ParsedDocument
from docmill.parsers.detect import file_stem
from docmill.parsers.package import (
    CORE_RELTYPE,
    HYPERLINK_RELTYPE,
    MAIN_RELTYPE,
    MAX_EXPANDED_BYTES,
    OFFICE_RELS,
    Package,
    external_links,
    number,
    ooxml_core,
    ooxml_main,
    read_package,
    target_of,
)
from docmill.parsers.text import SectionWriter, one_line

MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

_HEADING_STYLE = re.compile(r"^heading\s*([1-9])$", re.IGNORECASE)
_TITLE_STYLE = "title"
# Custom heading styles usually derive from a built-in one; look this far up the chain.
_MAX_STYLE_DEPTH = 4
# Real documents define a few hundred styles; a part of millions would only fill memory.
_MAX_STYLES = 10_000

# Element and attribute names as expat reports them with namespace_separator="}": "<uri>}<local>".
_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_VAL = _W + "val"
_STYLES_RELTYPE = OFFICE_RELS + "styles"
_USED_RELTYPES = frozenset({MAIN_RELTYPE, _STYLES_RELTYPE, HYPERLINK_RELTYPE, CORE_RELTYPE})
_DEFAULT_MAIN_PART = "word/document.xml"

# The place of an element in the body, from its parent's place and its own tag. Only elements whose
# text is read have one; any other element, and everything inside it, is skipped.
_PLACES: dict[tuple[str, str], str] = {
    ("root", _W + "document"): "document",
    ("document", _W + "body"): "block",
    # Content controls (a table of contents, form blocks) wrap ordinary paragraphs and tables.
    ("block", _W + "sdt"): "sdt",
    ("sdt", _W + "sdtContent"): "block",
    ("block", _W + "p"): "p",
    ("block", _W + "tbl"): "tbl",
    ("tbl", _W + "tr"): "tr",
    ("tr", _W + "trPr"): "trPr",
    ("tr", _W + "tc"): "tc",
    ("tc", _W + "tcPr"): "tcPr",
    ("tc", _W + "p"): "p",
    ("p", _W + "pPr"): "pPr",
    ("p", _W + "r"): "r",
    ("p", _W + "hyperlink"): "hyperlink",
    ("hyperlink", _W + "r"): "r",
    ("r", _W + "t"): "t",
}
# Run content that stands for one character (w:br is a line break only when of type textWrapping).
_RUN_CHARACTERS = {_W + "tab": "\t", _W + "ptab": "\t", _W + "cr": "\n", _W + "noBreakHyphen": "-"}


def parse(data: bytes, name: str) -> ParsedDocument:
    """Parse a DOCX; a package that cannot be read raises CorruptDocumentError."""
    # The limit is looked up here, not bound at import, so that it can be changed for one format.
    return read_package(data, name, "DOCX", lambda package: _read(package, name), MAX_EXPANDED_BYTES)


def _read(package: Package, name: str) -> ParsedDocument:
    """Read the core properties and styles, then stream the main document part through a _BodyReader."""
    main, package_rels = ooxml_main(package, _DEFAULT_MAIN_PART)
    main_rels = package.relationships(main, _USED_RELTYPES)
    core = ooxml_core(package, package_rels)
    styles = _StyleReader()
    styles_part = target_of(main_rels, _STYLES_RELTYPE, main)
    if styles_part in package.members:
        package.stream(styles_part, styles.start)
    body = _BodyReader(styles)
    package.stream(main, body.start, body.end, body.data)
    body.writer.flush()

    metadata: dict[str, Any] = {"author": core.author} if core.author else {}
    return ParsedDocument(
        title=core.title or body.title_paragraph or body.first_heading or file_stem(name),
        sections=body.writer.sections,
        mime=MIME,
        metadata=metadata,
        links=external_links(main_rels),
    )


@dataclass(slots=True)
class _Style:
    kind: str  # w:type: paragraph, character, table or numbering
    name: str = ""
    based_on: str | None = None


class _StyleReader:
    """Styles by id from the styles part, and the kind of paragraph each style makes."""

    def __init__(self) -> None:
        self._styles: dict[str, _Style] = {}
        self._default: _Style | None = None
        self._current: _Style | None = None

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        if tag == _W + "style":
            self._current = _Style(attrs.get(_W + "type", "paragraph"))
            if len(self._styles) < _MAX_STYLES:
                self._styles[attrs.get(_W + "styleId", "")] = self._current
            if self._current.kind == "paragraph" and attrs.get(_W + "default") in ("1", "true", "on"):
                self._default = self._current
        # Only a style has w:name and w:basedOn children (latent styles name theirs in attributes), so
        # they belong to the last style opened, and no end events are needed.
        elif tag == _W + "name" and self._current is not None:
            self._current.name = attrs.get(_VAL, "")
        elif tag == _W + "basedOn" and self._current is not None:
            self._current.based_on = attrs.get(_VAL)

    def paragraph_kind(self, style_id: str | None) -> tuple[str, int]:
        """('title'|'heading'|'bullet'|'body', heading level) of a paragraph of style ``style_id``;
        like Word, a paragraph without a style, or with one that is not a paragraph style, has the
        default paragraph style."""
        style = self._styles.get(style_id) if style_id is not None else None
        if style is None or style.kind != "paragraph":
            style = self._default
        for _ in range(_MAX_STYLE_DEPTH):
            if style is None:
                break
            style_name = style.name.strip()
            if style_name.lower() == _TITLE_STYLE:
                return "title", 0
            match = _HEADING_STYLE.match(style_name)
            if match:
                return "heading", int(match.group(1))
            if style_name.lower().startswith("list bullet"):
                return "bullet", 0
            style = self._styles.get(style.based_on) if style.based_on is not None else None
        return "body", 0


class _BodyReader:
    """Writes the body's paragraphs and table rows to a SectionWriter as expat reads them.

    Memory holds the text of one paragraph or table row, the stack of open elements, and the text of
    the previous row's cells (a vertically merged cell shows the text of the cell it continues).
    """

    def __init__(self, styles: _StyleReader) -> None:
        self.writer = SectionWriter()
        self.title_paragraph: str | None = None
        self.first_heading: str | None = None
        self._styles = styles
        self._places: list[str] = ["root"]  # the place (see _PLACES) of each open element
        self._text: list[str] = []  # of the paragraph being read
        self._style: str | None = None
        self._cell: list[str] = []  # paragraph texts of the cell being read
        self._span = 1
        self._merge: str | None = None
        self._row: list[str] = []
        self._column = 0  # grid column of the cell being read
        self._row_by_column: dict[int, str] = {}
        self._above: dict[int, str] = {}

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        # The place stack of PlaceReader, inlined: one Python call less per element is 7% of the time
        # a large document takes.
        parent = self._places[-1]
        place = _PLACES.get((parent, tag), "")
        self._places.append(place)
        if place == "p":
            self._text = []
            self._style = None
        elif parent == "r":
            if tag == _W + "br":
                self._text.append("\n" if attrs.get(_W + "type", "textWrapping") == "textWrapping" else "")
            else:
                self._text.append(_RUN_CHARACTERS.get(tag, ""))
        elif parent == "pPr" and tag == _W + "pStyle":
            self._style = attrs.get(_VAL)
        elif place == "tc":
            self._cell, self._span, self._merge = [], 1, None
        elif parent == "tcPr" and tag == _W + "gridSpan":
            self._span = number(attrs.get(_VAL), 1)
        elif parent == "tcPr" and tag == _W + "vMerge":
            self._merge = attrs.get(_VAL, "continue")
        elif place == "tr":
            self._row, self._column, self._row_by_column = [], 0, {}
        elif parent == "trPr" and tag == _W + "gridBefore":
            self._column = number(attrs.get(_VAL), 0)
        elif place == "tbl":
            self._above = {}

    def data(self, text: str) -> None:
        if self._places[-1] == "t":
            self._text.append(text)

    def end(self, _: str) -> None:
        place = self._places.pop()
        if place == "p":
            if self._text:  # most empty paragraphs have no runs: they end here
                self._end_paragraph("".join(self._text))
        elif place == "tc":
            self._end_cell()
        elif place == "tr":
            self._above = self._row_by_column
            if any(self._row):
                self.writer.add(" | ".join(self._row))

    def _end_paragraph(self, text: str) -> None:
        if self._places[-1] == "tc":
            self._cell.append(text)
            return
        text = text.strip()
        if not text:
            return
        kind, level = self._styles.paragraph_kind(self._style)
        if kind == "title":
            # The Title style names the document; kept out of heading paths so they stay short.
            self.title_paragraph = self.title_paragraph or text
        elif kind == "heading":
            self.first_heading = self.first_heading or text
            self.writer.heading(level, one_line(text))
        elif kind == "bullet":
            self.writer.add(f"- {text}")
        else:
            self.writer.add(text)

    def _end_cell(self) -> None:
        """A cell is written once, however many grid columns it spans; one that continues a vertical
        merge shows the text of the cell above it."""
        if self._merge is not None and self._merge != "restart":
            text = self._above.get(self._column, "")
        else:
            text = one_line(" ".join(self._cell))
        self._row_by_column[self._column] = text
        self._row.append(text)
        self._column += self._span
