"""PDF (pypdfium2): one section per page that has text, read one page at a time."""

from __future__ import annotations

import re
import threading
from typing import Any

import pypdfium2
import pypdfium2.raw as pdfium_c

from docmill.errors import CorruptDocumentError
from docmill.models import ParsedDocument, Section
from docmill.parsers.detect import file_stem
from docmill.parsers.text import first_line, normalize_newlines, trim_blank_lines

MIME = "application/pdf"
NO_TEXT_NOTE = "no extractable text (scanned pages? docmill does no OCR)"

# PDFium reports load failures as "Failed to load document (PDFium: <reason>)."; keep only the reason.
_PDFIUM_REASON = re.compile(r"\(PDFium: (.+?)\)")
# Control characters PDFium emits for soft hyphens and unmapped glyphs; they are not text.
_JUNK = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
# An empty page tree, and the dictionary of a page (its /Type is /Page, not /Pages): searched only when
# PDFium refuses a file without a reason, to tell a document of no pages from one of unreachable pages.
_EMPTY_PAGE_TREE = re.compile(rb"/Count\s*0(?![0-9.])")
_PAGE_OBJECT = re.compile(rb"/Type\s*/Page(?![A-Za-z0-9])")
# PDFium is not thread-safe, and the pipeline parses on several threads: one PDF at a time.
_PDFIUM_LOCK = threading.Lock()


def parse(data: bytes, name: str) -> ParsedDocument:
    """Parse a PDF page by page; encrypted or broken files raise CorruptDocumentError."""
    with _PDFIUM_LOCK:
        return _parse_locked(data, name)


def _parse_locked(data: bytes, name: str) -> ParsedDocument:
    # PDFium refuses a document without pages yet sets no error for it, so the error read after the
    # refusal is the last one of any earlier call: a stale "Success", or another file's reason. A
    # document in memory never fails to be read as a file, so a file error set here beforehand marks a
    # refusal that names no reason of its own.
    pdfium_c.FPDF_LoadDocument(b"", None)
    try:
        document = pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError as exc:
        if exc.err_code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
            raise CorruptDocumentError(f"encrypted PDF: a password is needed to open it ({name})") from exc
        if exc.err_code != pdfium_c.FPDF_ERR_FILE:
            raise CorruptDocumentError(f"corrupt PDF: {_reason(exc)} ({name})") from exc
        if _EMPTY_PAGE_TREE.search(data) and not _PAGE_OBJECT.search(data):
            return ParsedDocument(title=file_stem(name), sections=[], mime=MIME, metadata={"pages": 0})
        raise CorruptDocumentError(f"corrupt PDF: pdfium could not open it ({name})") from exc
    try:
        return _read(document, name)
    except CorruptDocumentError:
        raise
    except Exception as exc:
        raise CorruptDocumentError(f"corrupt PDF: {_reason(exc)} ({name})") from exc
    finally:
        document.close()


def _read(document: pypdfium2.PdfDocument, name: str) -> ParsedDocument:
    """Extract every page's text, holding only one page in memory at a time."""
    page_count = len(document)
    sections: list[Section] = []
    unreadable: list[int] = []
    for index in range(page_count):
        try:
            text = _page_text(document, index)
        except pypdfium2.PdfiumError:
            # One damaged page should not cost the reader the other pages; it is reported in metadata.
            unreadable.append(index + 1)
            continue
        if text:
            sections.append(Section(text=text, page=index + 1))
    if page_count and len(unreadable) == page_count:
        raise CorruptDocumentError(f"corrupt PDF: none of its {page_count} pages can be read ({name})")

    metadata: dict[str, Any] = {"pages": page_count}
    if unreadable:
        metadata["unreadable_pages"] = unreadable
    if page_count and not sections:
        metadata["note"] = NO_TEXT_NOTE
    info = _metadata(document)
    if info.get("Author"):
        metadata["author"] = info["Author"]
    title = info.get("Title") or (first_line(sections[0].text) if sections else None) or file_stem(name)
    return ParsedDocument(title=title, sections=sections, mime=MIME, metadata=metadata)


def _page_text(document: pypdfium2.PdfDocument, index: int) -> str:
    """Clean text of one page; the page and its text page are closed before returning."""
    page = document[index]
    try:
        textpage = page.get_textpage()
        try:
            raw = textpage.get_text_range()
        finally:
            textpage.close()
    finally:
        page.close()
    return trim_blank_lines(normalize_newlines(_JUNK.sub("", raw)).split("\n"))


def _metadata(document: pypdfium2.PdfDocument) -> dict[str, str]:
    """The document information dictionary with empty values removed (a broken one counts as empty)."""
    try:
        info = document.get_metadata_dict(skip_empty=True)
    except pypdfium2.PdfiumError:
        return {}
    return {key: str(value).strip() for key, value in info.items() if str(value).strip()}


def _reason(exc: BaseException) -> str:
    """PDFium's own words for a failure, without the wrapper text."""
    match = _PDFIUM_REASON.search(str(exc))
    return match.group(1) if match else (str(exc) or type(exc).__name__)
