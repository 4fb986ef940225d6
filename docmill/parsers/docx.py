"""DOCX (python-docx): body in document order, headings build paths, tables become `a | b` lines."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from typing import Any

import docx
from docx.document import Document as DocxDocument
from docx.oxml.ns import qn
from docx.table import Table
from docx.text.paragraph import Paragraph

from docmill.errors import CorruptDocumentError, DocumentTooLargeError
from docmill.models import ParsedDocument
from docmill.parsers.detect import file_stem
from docmill.parsers.text import SectionWriter

MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

_HEADING_STYLE = re.compile(r"^heading\s*([1-9])$", re.IGNORECASE)
_TITLE_STYLE = "title"
# Custom heading styles usually derive from a built-in one; look this far up the chain.
_MAX_STYLE_DEPTH = 4
_HYPERLINK_RELTYPE = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/hyperlink"
#: python-docx unzips every part of the package into memory: a few MB of zipped XML can expand to
#: gigabytes (a zip bomb). Real documents, images included, stay far below this.
MAX_EXPANDED_BYTES = 1_000_000_000


def parse(data: bytes, name: str) -> ParsedDocument:
    """Parse a DOCX; a package python-docx cannot open raises CorruptDocumentError."""
    _check_expansion(data, name)
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # zipfile, lxml and python-docx each raise their own types
        raise CorruptDocumentError(f"corrupt DOCX: {exc or type(exc).__name__} ({name})") from exc
    try:
        return _read(document, name)
    except Exception as exc:
        raise CorruptDocumentError(f"corrupt DOCX: {exc or type(exc).__name__} ({name})") from exc


def _check_expansion(data: bytes, name: str) -> None:
    """Refuse a package whose parts unzip to more than MAX_EXPANDED_BYTES (the sizes its directory
    declares, which are also what zipfile will read)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as package:
            expanded = sum(info.file_size for info in package.infolist())
    except (zipfile.BadZipFile, ValueError):
        return  # not a readable zip: python-docx says what is wrong with it
    if expanded > MAX_EXPANDED_BYTES:
        raise DocumentTooLargeError(f"DOCX unzips to {expanded / 1e9:.1f} GB, over {MAX_EXPANDED_BYTES / 1e9:.0f} GB: "
                                    f"refused as a likely zip bomb ({name})")


def _read(document: DocxDocument, name: str) -> ParsedDocument:
    """Walk the body in document order, writing paragraphs and tables under their headings."""
    writer = SectionWriter()
    title_paragraph: str | None = None
    first_heading: str | None = None
    for block in _blocks(document):
        if isinstance(block, Table):
            for line in _table_lines(block):
                writer.add(line)
            continue
        text = block.text.strip()
        if not text:
            continue
        kind, level = _paragraph_kind(block)
        if kind == "title":
            # The Title style names the document; kept out of heading paths so they stay short.
            title_paragraph = title_paragraph or text
        elif kind == "heading":
            first_heading = first_heading or text
            writer.heading(level, " ".join(text.split()))
        elif kind == "bullet":
            writer.add(f"- {text}")
        else:
            writer.add(text)
    writer.flush()

    core = document.core_properties
    metadata: dict[str, Any] = {}
    if (core.author or "").strip():
        metadata["author"] = core.author.strip()
    title = (core.title or "").strip() or title_paragraph or first_heading or file_stem(name)
    return ParsedDocument(
        title=title,
        sections=writer.sections,
        mime=MIME,
        metadata=metadata,
        links=_hyperlinks(document),
    )


def _blocks(document: DocxDocument) -> Iterator[Paragraph | Table]:
    """Paragraphs and tables of the body in document order, content controls unwrapped."""
    yield from _children(document.element.body, document)


def _children(parent: Any, document: DocxDocument) -> Iterator[Paragraph | Table]:
    for child in parent.iterchildren():
        if child.tag == qn("w:p"):
            yield Paragraph(child, document)
        elif child.tag == qn("w:tbl"):
            yield Table(child, document)
        elif child.tag == qn("w:sdt"):
            # Content controls (a table of contents, form blocks) wrap ordinary paragraphs and tables.
            content = child.find(qn("w:sdtContent"))
            if content is not None:
                yield from _children(content, document)


def _paragraph_kind(paragraph: Paragraph) -> tuple[str, int]:
    """('title'|'heading'|'bullet'|'body', heading level) from the paragraph's style chain."""
    style = paragraph.style
    for _ in range(_MAX_STYLE_DEPTH):
        if style is None:
            break
        style_name = (style.name or "").strip()
        if style_name.lower() == _TITLE_STYLE:
            return "title", 0
        match = _HEADING_STYLE.match(style_name)
        if match:
            return "heading", int(match.group(1))
        if style_name.lower().startswith("list bullet"):
            return "bullet", 0
        style = style.base_style
    return "body", 0


def _table_lines(table: Table) -> Iterator[str]:
    """One `cell | cell` line per row; a merged cell is written once, not once per grid column."""
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            if cell._tc is previous:
                continue
            previous = cell._tc
            cells.append(" ".join(cell.text.split()))
        if any(cells):
            yield " | ".join(cells)


def _hyperlinks(document: DocxDocument) -> list[str]:
    """External hyperlink targets of the main document part, without duplicates."""
    links: list[str] = []
    for rel in document.part.rels.values():
        if rel.reltype == _HYPERLINK_RELTYPE and rel.is_external and rel.target_ref not in links:
            links.append(rel.target_ref)
    return links
