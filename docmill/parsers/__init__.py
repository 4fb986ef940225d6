"""Turn a document's bytes into readable text split into sections: one module per format.

``parse(data, name)`` detects the format by content (the name is only a hint) and dispatches through
a registry that refuses duplicate registrations. Expected failures are raised as
``UnsupportedFormatError`` or ``CorruptDocumentError``; anything unexpected from a third-party parser is
wrapped into ``CorruptDocumentError`` so one bad file is dead-lettered instead of stopping a run.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable

from docmill.errors import CorruptDocumentError, DocmillError
from docmill.models import ParsedDocument
from docmill.parsers import code, docx, html, markdown, pdf, tabular, text
from docmill.parsers.detect import CODE_FILENAMES, EXTENSIONS, detect_format, file_stem

ParseFunction = Callable[[bytes, str], ParsedDocument]

_REGISTRY: dict[str, ParseFunction] = {}


def register(fmt: str, function: ParseFunction) -> None:
    """Register the parser of one format; registering a format twice is a programming error."""
    if fmt in _REGISTRY:
        raise ValueError(f"a parser for format {fmt!r} is already registered")
    _REGISTRY[fmt] = function


def parser_for(fmt: str) -> ParseFunction:
    """The registered parser of ``fmt`` (KeyError when there is none)."""
    return _REGISTRY[fmt]


def parse(data: bytes, name: str) -> ParsedDocument:
    """Parse a document's bytes; ``name`` is its file name or URL path (its extension is a hint)."""
    fmt = "unknown format"
    try:
        fmt = detect_format(data, name)
        if not data.removeprefix(codecs.BOM_UTF8).strip():
            # An empty file is a valid document with nothing to index, not a failure.
            return ParsedDocument(title=file_stem(name), sections=[], mime=_EMPTY_MIME.get(fmt, text.MIME))
        return _REGISTRY[fmt](data, name)
    except (DocmillError, MemoryError):
        raise
    except Exception as exc:
        raise CorruptDocumentError(f"cannot parse {fmt} ({name}): {type(exc).__name__}: {exc}") from exc


register("text", text.parse)
register("markdown", markdown.parse)
register("html", html.parse)
register("pdf", pdf.parse)
register("docx", docx.parse)
register("code", code.parse)
register("csv", tabular.parse_csv)
register("json", tabular.parse_json)

SUPPORTED_FORMATS: tuple[str, ...] = tuple(_REGISTRY)

_EMPTY_MIME: dict[str, str] = {
    "text": text.MIME,
    "markdown": markdown.MIME,
    "html": html.MIME,
    "pdf": pdf.MIME,
    "docx": docx.MIME,
    "code": text.MIME,
    "csv": tabular.CSV_MIME,
    "json": tabular.JSON_MIME,
}

__all__ = [
    "CODE_FILENAMES",
    "EXTENSIONS",
    "SUPPORTED_FORMATS",
    "detect_format",
    "parse",
    "parser_for",
    "register",
]
