"""Decide a document's format from its bytes first and its name second."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import PurePosixPath

from docmill.errors import UnsupportedFormatError

# Extensions per format, without the dot; detection and the README both read this table.
# fmt: off
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "text": ("txt", "text", "log", "rst"),
    "markdown": ("md", "markdown", "mdown", "mkd", "mkdn", "mdx"),
    "html": ("html", "htm", "xhtml"),
    "pdf": ("pdf",),
    "docx": ("docx",),
    "code": (
        "py", "js", "jsx", "ts", "tsx", "go", "rs", "java", "c", "h", "cpp", "cc", "hpp", "cs", "rb",
        "php", "swift", "kt", "scala", "sh", "bash", "zsh", "sql", "r", "lua", "pl", "yaml", "yml",
        "toml",
    ),
    "csv": ("csv", "tsv"),
    "json": ("json", "jsonl", "ndjson"),
}
# fmt: on
# Extension-less file names that are code.
CODE_FILENAMES: tuple[str, ...] = ("Dockerfile", "Makefile", "GNUmakefile", "makefile")

_BY_EXTENSION: dict[str, str] = {ext: fmt for fmt, exts in EXTENSIONS.items() for ext in exts}

# (prefix, what) for binary formats that are refused outright; checked before anything else.
_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"),
    (b"II*\x00", "TIFF image"),
    (b"MM\x00*", "TIFF image"),
    (b"\x00\x00\x01\x00", "ICO image"),
    (b"\x7fELF", "ELF executable"),
    (b"\xcf\xfa\xed\xfe", "Mach-O executable"),
    (b"\xfe\xed\xfa\xcf", "Mach-O executable"),
    (b"\xca\xfe\xba\xbe", "Mach-O universal binary or Java class"),
    (b"\x00asm", "WebAssembly module"),
    (b"\x1f\x8b", "gzip archive"),
    (b"\xfd7zXZ\x00", "xz archive"),
    (b"\x28\xb5\x2f\xfd", "zstd archive"),
    (b"7z\xbc\xaf\x27\x1c", "7z archive"),
    (b"Rar!\x1a\x07", "RAR archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "OLE2 compound file (legacy .doc/.xls/.ppt)"),
    (b"SQLite format 3\x00", "SQLite database"),
    (b"ID3\x03", "MP3 audio"),
    (b"ID3\x04", "MP3 audio"),
    (b"OggS", "Ogg media"),
    (b"fLaC", "FLAC audio"),
    (b"\x1aE\xdf\xa3", "Matroska/WebM video"),
    (b"{\\rtf", "RTF document"),
    (b"%!PS", "PostScript document"),
)
# (name inside the zip, what) for zip-based formats docmill does not read.
_ZIP_KINDS: tuple[tuple[str, str], ...] = (
    ("xl/workbook.xml", "XLSX spreadsheet"),
    ("ppt/presentation.xml", "PPTX presentation"),
    ("META-INF/container.xml", "EPUB book"),
    ("content.xml", "OpenDocument file"),
    ("META-INF/MANIFEST.MF", "Java archive"),
)
_DOCX_MEMBER = "word/document.xml"
# Where a PDF header may start: PDF readers accept a little junk before it.
_PDF_HEADER_WINDOW = 1024
# How much of the file is inspected to tell text from binary.
_SNIFF_BYTES = 8192
# Above this share of control characters decoded "text" is really binary data.
_MAX_CONTROL_RATIO = 0.1


def file_name(name: str) -> str:
    """Last component of a path or URL path ('' when it ends with a slash)."""
    return PurePosixPath(name.replace("\\", "/")).name if not name.endswith(("/", "\\")) else ""


def file_stem(name: str) -> str:
    """File name without its extension, used as the title of last resort."""
    base = file_name(name) or PurePosixPath(name.rstrip("/\\").replace("\\", "/")).name
    return PurePosixPath(base).stem or base or name


def extension(name: str) -> str:
    """Lower-case extension without the dot ('' when there is none)."""
    return PurePosixPath(file_name(name)).suffix.lower().lstrip(".")


def format_from_name(name: str) -> str | None:
    """The format the name suggests, or None when the name does not help."""
    base = file_name(name)
    if base in CODE_FILENAMES or base.startswith("Dockerfile"):
        return "code"
    return _BY_EXTENSION.get(extension(name))


def detect_format(data: bytes, name: str) -> str:
    """Return one of the supported format names, or raise UnsupportedFormatError.

    Content decides first (magic bytes, text versus binary); the name only chooses among text formats,
    except that a page starting with ``<!doctype html``/``<html`` is HTML even behind a script extension.
    """
    hinted = format_from_name(name)
    pdf_at = data.find(b"%PDF-", 0, _PDF_HEADER_WINDOW)
    if pdf_at == 0 or (pdf_at > 0 and hinted == "pdf"):
        return "pdf"
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _detect_zip(data, name)
    what = _binary_kind(data)
    if what is not None:
        raise UnsupportedFormatError(f"unsupported format: {what} ({name})")
    if not data.strip():
        return hinted if hinted not in (None, "pdf", "docx") else "text"
    _refuse_binary(data, name)
    if hinted not in (None, "pdf", "docx", "code"):
        return hinted
    if hinted == "code":
        # Web pages are often served from script paths (/index.php): what they return is HTML.
        return "html" if _looks_like_html(data) else "code"
    return _sniff_text(data)


def _detect_zip(data: bytes, name: str) -> str:
    """A zip is a DOCX only when it holds word/document.xml."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        # A truncated DOCX has no central directory, but its local headers still name its parts:
        # hand it to the DOCX parser, which reports it as corrupt rather than as unknown.
        if _DOCX_MEMBER.encode() in data:
            return "docx"
        raise UnsupportedFormatError(f"unsupported format: zip archive (unreadable: {exc}) ({name})") from exc
    if _DOCX_MEMBER in members:
        return "docx"
    kind = next((what for member, what in _ZIP_KINDS if member in members), None)
    what = f"zip archive (looks like a {kind})" if kind else "zip archive (not a DOCX)"
    raise UnsupportedFormatError(f"unsupported format: {what} ({name})")


def _binary_kind(data: bytes) -> str | None:
    """Name of a known binary format that docmill refuses, or None."""
    for magic, what in _MAGICS:
        if data.startswith(magic):
            return what
    # bzip2 names its block size (1-9) between the magic and the block header.
    if data.startswith(b"BZh") and data[4:10] == b"1AY&SY":
        return "bzip2 archive"
    # RIFF containers (WAV, AVI, WebP) and ISO media (MP4, MOV, HEIC) carry their type at offset 8/4.
    if data.startswith(b"RIFF") and len(data) >= 12:
        return {b"WAVE": "WAV audio", b"AVI ": "AVI video", b"WEBP": "WebP image"}.get(
            data[8:12], "RIFF media file"
        )
    if data[4:8] == b"ftyp":
        return "MP4/QuickTime media file"
    return None


def _refuse_binary(data: bytes, name: str) -> None:
    """Raise when the bytes are not text, whatever the name says."""
    # Imported here because text.py imports this module for its name helpers.
    from docmill.parsers.text import bom_encoding, control_ratio, decode_text

    sample = data[:_SNIFF_BYTES]
    cut = sample.rfind(b"\n")
    if len(data) > len(sample) and cut > len(sample) // 2:
        # End the sample on a line break so a multi-byte character is not split in two.
        sample = sample[: cut + 1]
    bom = bom_encoding(sample)
    if bom is None and b"\x00" in sample:
        raise UnsupportedFormatError(f"unsupported format: binary data (NUL bytes) ({name})")
    text, _ = decode_text(sample)
    ratio = control_ratio(text)
    if ratio > _MAX_CONTROL_RATIO:
        raise UnsupportedFormatError(
            f"unsupported format: binary data ({ratio:.0%} control characters) ({name})"
        )


def _looks_like_html(data: bytes) -> bool:
    """True when the text starts like an HTML page."""
    return _text_start(data).lower().startswith(("<!doctype html", "<html"))


def _sniff_text(data: bytes) -> str:
    """Pick a text format for data whose name gives no useful hint."""
    from docmill.parsers.text import decode_text

    if _looks_like_html(data):
        return "html"
    if _text_start(data).startswith(("{", "[")):
        text, _ = decode_text(data)
        try:
            json.loads(text)
        except (ValueError, RecursionError):
            return "text"
        return "json"
    return "text"


def _text_start(data: bytes) -> str:
    """The first characters of the decoded text, leading whitespace removed."""
    from docmill.parsers.text import decode_text

    head, _ = decode_text(data[:_SNIFF_BYTES])
    return head.lstrip()[:64]
