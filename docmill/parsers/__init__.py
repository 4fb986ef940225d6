"""Turn a document's bytes into readable text split into sections: one module per format.

``parse(data, name)`` detects the format by content (the name is only a hint) and dispatches through
a registry that refuses duplicate registrations. Expected failures are raised as
``UnsupportedFormatError`` or ``CorruptDocumentError``; anything unexpected from a third-party parser is
wrapped into ``CorruptDocumentError`` so one bad file is dead-lettered instead of stopping a run.

Whatever a parser returns leaves ``parse()`` as valid Unicode without NUL characters, with titles and
headings of a readable length: the rules every format shares are applied here, once.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from typing import Any

from docmill.errors import CorruptDocumentError, DocmillError
from docmill.models import ParsedDocument, Section
from docmill.parsers import code, docx, epub, html, markdown, notebook, odt, pdf, pptx, rst, tabular, text, xlsx
from docmill.parsers.detect import CODE_FILENAMES, EXTENSIONS, detect_format, file_stem

ParseFunction = Callable[[bytes, str], ParsedDocument]

#: Longest title or heading kept: a whole paragraph marked as a heading is copied into every chunk of
#: its section and shown in every search hit.
TITLE_MAX_CHARS = 200

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
            document = ParsedDocument(title=file_stem(name), sections=[], mime=_EMPTY_MIME.get(fmt, text.MIME))
        else:
            document = _REGISTRY[fmt](data, name)
    except (DocmillError, MemoryError):
        raise
    except Exception as exc:
        raise CorruptDocumentError(f"cannot parse {fmt} ({name}): {type(exc).__name__}: {exc}") from exc
    return _sanitized(document)


def _sanitized(document: ParsedDocument) -> ParsedDocument:
    """``document`` with every string made storable (see :func:`valid_text`), titles and headings cut."""
    return ParsedDocument(
        title=shorten(valid_text(document.title)) if document.title is not None else None,
        sections=[
            Section(
                text=valid_text(section.text),
                heading_path=tuple(shorten(valid_text(heading)) for heading in section.heading_path),
                page=section.page,
            )
            for section in document.sections
        ],
        mime=document.mime,
        metadata=_valid_value(document.metadata),
        links=[valid_text(link) for link in document.links],
    )


def valid_text(value: str) -> str:
    """``value`` without NUL characters and with lone surrogates replaced by U+FFFD.

    PostgreSQL refuses NUL in text (SQLite stores it), and a lone surrogate, which a JSON escape or a
    file name can carry, is not Unicode: the tokenizer raises on it. Most text is ASCII, which
    ``isascii()`` tells in constant time; other text is checked by one UTF-8 encoding.
    """
    if "\x00" in value:
        value = value.replace("\x00", "")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # Through UTF-16, a high surrogate followed by a low one becomes the character they encode.
            value = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return value


def _valid_value(value: Any) -> Any:
    """A metadata value with :func:`valid_text` applied to every string in it, keys included."""
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, dict):
        return {_valid_value(key): _valid_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_valid_value(item) for item in value)
    return value


def shorten(value: str, limit: int = TITLE_MAX_CHARS) -> str:
    """``value`` cut to at most ``limit`` characters, at a space when there is one, ending in "…"."""
    if len(value) <= limit:
        return value
    cut = value[: limit - 1]
    space = cut.rfind(" ", limit // 2)
    return (cut[:space] if space != -1 else cut).rstrip() + "…"


register("text", text.parse)
register("markdown", markdown.parse)
register("rst", rst.parse)
register("html", html.parse)
register("pdf", pdf.parse)
register("docx", docx.parse)
register("xlsx", xlsx.parse)
register("pptx", pptx.parse)
register("epub", epub.parse)
register("odt", odt.parse)
register("code", code.parse)
register("csv", tabular.parse_csv)
register("json", tabular.parse_json)
register("notebook", notebook.parse)

SUPPORTED_FORMATS: tuple[str, ...] = tuple(_REGISTRY)

_EMPTY_MIME: dict[str, str] = {
    "text": text.MIME,
    "markdown": markdown.MIME,
    "rst": rst.MIME,
    "html": html.MIME,
    "pdf": pdf.MIME,
    "docx": docx.MIME,
    "xlsx": xlsx.MIME,
    "pptx": pptx.MIME,
    "epub": epub.MIME,
    "odt": odt.MIME,
    "code": text.MIME,
    "csv": tabular.CSV_MIME,
    "json": tabular.JSON_MIME,
    "notebook": notebook.MIME,
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
