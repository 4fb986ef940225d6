"""Decide a document's format from its bytes first and its name second."""

from __future__ import annotations

import io
import json
import re
import zipfile
import zlib
from pathlib import PurePosixPath

from docmill.errors import UnsupportedFormatError
from docmill.parsers.package import check_member_count

# Extensions per format, without the dot; detection and the README both read this table.
# fmt: off
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "text": ("txt", "text", "log"),
    "markdown": ("md", "markdown", "mdown", "mkd", "mkdn", "mdx"),
    "rst": ("rst", "rest"),
    "html": ("html", "htm", "xhtml"),
    "pdf": ("pdf",),
    "docx": ("docx",),
    "xlsx": ("xlsx",),
    "pptx": ("pptx",),
    "epub": ("epub",),
    "odt": ("odt",),
    "code": (
        "py", "js", "jsx", "ts", "tsx", "go", "rs", "java", "c", "h", "cpp", "cc", "hpp", "cs", "rb",
        "php", "swift", "kt", "scala", "sh", "bash", "zsh", "sql", "r", "lua", "pl", "yaml", "yml",
        "toml",
    ),
    "csv": ("csv", "tsv"),
    "json": ("json", "jsonl", "ndjson"),
    "notebook": ("ipynb",),
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
# PDF and the formats packaged as zips: content tells them, so a name saying one of them is no hint
# about the format of text (or of empty bytes).
_BINARY_FORMATS = frozenset({"pdf", "docx", "xlsx", "pptx", "epub", "odt"})
# (member, format): a zip holding the member is a package of the format, in this order of precedence.
_PACKAGE_MEMBERS: tuple[tuple[str, str], ...] = (
    ("word/document.xml", "docx"),
    ("xl/workbook.xml", "xlsx"),
    ("ppt/presentation.xml", "pptx"),
)
_EPUB_CONTAINER = "META-INF/container.xml"
_ODF_CONTENT = "content.xml"
_MIMETYPE_MEMBER = "mimetype"
_ODT_MIMETYPE = "application/vnd.oasis.opendocument.text"
# What the other OpenDocument kinds are called in the message that refuses them.
_ODF_KINDS: dict[str, str] = {
    "application/vnd.oasis.opendocument.spreadsheet": "an OpenDocument spreadsheet",
    "application/vnd.oasis.opendocument.presentation": "an OpenDocument presentation",
    "application/vnd.oasis.opendocument.graphics": "an OpenDocument drawing",
}
_EPUB_MIMETYPE = "application/epub+zip"
# A truncated package has no directory, but the local headers of the parts before the cut still name
# them, and an EPUB or OpenDocument package starts with a stored "mimetype" member saying what it is.
_TRUNCATED_SIGNS: tuple[tuple[re.Pattern[bytes], str], ...] = (
    (re.compile(rb"word/document\.xml"), "docx"),
    (re.compile(rb"xl/workbook\.xml|xl/worksheets/"), "xlsx"),
    (re.compile(rb"ppt/presentation\.xml|ppt/slides/"), "pptx"),
    (re.compile(rb"mimetypeapplication/epub\+zip|META-INF/container\.xml"), "epub"),
    # Not -template, -master or -web: the next local header follows the bare type.
    (re.compile(rb"mimetype" + re.escape(_ODT_MIMETYPE.encode()) + rb"(?!-)"), "odt"),
)
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
        return _detect_zip(data, name, hinted)
    what = _binary_kind(data)
    if what is not None:
        raise UnsupportedFormatError(f"unsupported format: {what} ({name})")
    if not data.strip():
        return hinted if hinted is not None and hinted not in _BINARY_FORMATS else "text"
    _refuse_binary(data, name)
    if hinted is not None and hinted not in _BINARY_FORMATS and hinted != "code":
        return hinted
    if hinted == "code":
        # Web pages are often served from script paths (/index.php): what they return is HTML.
        return "html" if _looks_like_html(data) else "code"
    return _sniff_text(data)


def _detect_zip(data: bytes, name: str, hinted: str | None) -> str:
    """The package format of a zip, told by the members it holds; other zips are refused."""
    check_member_count(data, name, "zip archive")  # zipfile would hold its whole directory in memory
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = frozenset(archive.namelist())
            fmt = _package_format(archive, members, hinted)
            if fmt is not None:
                return fmt
            what = _zip_kind(archive, members)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        # Handed to its parser, a truncated package is reported as corrupt rather than as unknown: by the
        # parts it still names, else by its name when the cut came before any of them.
        fmt = next((fmt for sign, fmt in _TRUNCATED_SIGNS if sign.search(data)), None)
        if fmt is None and hinted in _BINARY_FORMATS and hinted != "pdf":
            fmt = hinted
        if fmt is not None:
            return fmt
        raise UnsupportedFormatError(f"unsupported format: zip archive (unreadable: {exc}) ({name})") from exc
    raise UnsupportedFormatError(f"unsupported format: zip archive ({what}) ({name})")


def _package_format(archive: zipfile.ZipFile, members: frozenset[str], hinted: str | None) -> str | None:
    """The format of a package docmill reads, or None. A package missing a part it needs is still of
    its format: its parser reports it as corrupt, naming the part."""
    fmt = next((fmt for member, fmt in _PACKAGE_MEMBERS if member in members), None)
    if fmt is not None:
        return fmt
    mimetype = _package_mimetype(archive, members)
    if mimetype == _EPUB_MIMETYPE or (
        _EPUB_CONTAINER in members and any(member.lower().endswith(".opf") for member in members)
    ):
        return "epub"
    # The mimetype member is optional in OpenDocument: without one, the name decides.
    if mimetype == _ODT_MIMETYPE or (not mimetype and _ODF_CONTENT in members and hinted == "odt"):
        return "odt"
    return None


def _zip_kind(archive: zipfile.ZipFile, members: frozenset[str]) -> str:
    """What a zip that holds no document docmill reads looks like, for the message refusing it."""
    mimetype = _package_mimetype(archive, members)
    if mimetype in _ODF_KINDS:
        return "looks like " + _ODF_KINDS[mimetype]
    if _ODF_CONTENT in members:
        return f"looks like an OpenDocument file ({mimetype or 'no mimetype'})"
    if _EPUB_CONTAINER in members:
        return "looks like an EPUB book without its package document"
    if "META-INF/MANIFEST.MF" in members:
        return "looks like a Java archive"
    return "no document docmill reads inside"


def _package_mimetype(archive: zipfile.ZipFile, members: frozenset[str]) -> str:
    """The media type the mimetype member of an EPUB or OpenDocument package states ('' when none, or
    when it cannot be read: the parser, if any, says what is wrong with the package)."""
    if _MIMETYPE_MEMBER not in members:
        return ""
    try:
        with archive.open(_MIMETYPE_MEMBER) as stream:
            # A few dozen ASCII characters; whatever it declares, no more than that is read.
            return stream.read(128).decode("ascii", errors="replace").strip()
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, zlib.error):  # RuntimeError: encrypted
        return ""


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
