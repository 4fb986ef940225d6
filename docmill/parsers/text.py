"""Plain text, plus the text helpers every other parser shares: decoding and section assembly."""

from __future__ import annotations

import codecs
import re
import unicodedata

import charset_normalizer

from docmill.models import ParsedDocument, Section
from docmill.parsers.detect import file_stem

MIME = "text/plain"

# Longest BOMs first: the UTF-32-LE BOM starts with the UTF-16-LE one.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# charset-normalizer is slow on big inputs and a sample is as good a witness as the whole file.
_DETECT_SAMPLE_BYTES = 64 * 1024
# Largest share of U+FFFD among the non-ASCII characters for which bytes still read as damaged UTF-8
# rather than another encoding (latin-1 read as UTF-8 gives one U+FFFD per accented letter, nothing else).
_MAX_UTF8_DAMAGE = 0.2
_KEEP_CONTROLS = frozenset("\t\n\r\f\v\x1b")


def bom_encoding(data: bytes) -> tuple[str, int] | None:
    """Return (codec, BOM length) when ``data`` starts with a Unicode byte-order mark."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return codec, len(bom)
    return None


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode bytes (BOM, then UTF-8, then charset-normalizer); never fails, bad bytes become U+FFFD."""
    bom = bom_encoding(data)
    if bom is not None:
        codec, skip = bom
        return data[skip:].decode(codec, errors="replace"), codec
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        # Judge the encoding where it goes wrong, not on an ASCII preamble, and on a window only
        # so a large file is not scanned character by character in Python.
        start = max(0, exc.start - _DETECT_SAMPLE_BYTES // 2)
        sample = data[start : start + _DETECT_SAMPLE_BYTES]
    if not _looks_like_damaged_utf8(sample.decode("utf-8", errors="replace")):
        encoding = _guess_legacy_encoding(sample)
        if encoding is not None:
            try:
                return data.decode(encoding, errors="replace"), encoding
            except LookupError:
                pass  # a codec name Python does not know: damaged UTF-8 is the safer reading
    return data.decode("utf-8", errors="replace"), "utf-8"


def _guess_legacy_encoding(sample: bytes) -> str | None:
    """charset-normalizer's pick, except that cp1252 wins among equally plausible candidates.

    On short Western European text every single-byte code page scores the same, and charset-normalizer
    then picks the first one (often cp1250, which turns "è" into "č"); cp1252 is by far the likeliest.
    """
    matches = list(charset_normalizer.from_bytes(sample))
    if not matches:
        return None
    best = matches[0]
    for match in matches:
        tied = abs(match.chaos - best.chaos) < 0.01 and abs(match.coherence - best.coherence) < 0.01
        if tied and "cp1252" in match.could_be_from_charset:
            return "cp1252"
    return best.encoding


def _looks_like_damaged_utf8(text: str) -> bool:
    """True when valid multi-byte UTF-8 sequences outnumber the invalid bytes by a wide margin."""
    bad = text.count("\ufffd")
    real_non_ascii = sum(1 for ch in text if ord(ch) > 127) - bad
    return real_non_ascii > 0 and bad <= _MAX_UTF8_DAMAGE * (bad + real_non_ascii)


def control_ratio(text: str) -> float:
    """Share of characters that do not occur in real text (control characters, U+FFFD)."""
    if not text:
        return 0.0
    bad = sum(
        1 for ch in text if ch == "\ufffd" or (ch not in _KEEP_CONTROLS and unicodedata.category(ch) == "Cc")
    )
    return bad / len(text)


def normalize_newlines(text: str) -> str:
    """Use ``\\n`` only, so character offsets do not depend on the platform that wrote the file."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def one_line(value: str) -> str:
    """``value`` on one line, its runs of whitespace made single spaces."""
    return " ".join(value.split())


def first_line(text: str) -> str | None:
    """First non-empty line, trimmed, or None."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped:
            return stripped
    return None


def trim_blank_lines(lines: list[str]) -> str:
    """Join lines without trailing spaces, dropping blank lines at both ends."""
    cleaned = [line.rstrip() for line in lines]
    start, end = 0, len(cleaned)
    while start < end and not cleaned[start]:
        start += 1
    while end > start and not cleaned[end - 1]:
        end -= 1
    return "\n".join(cleaned[start:end])


class SectionWriter:
    """Collects body lines under a stack of headings and emits one Section per heading change.

    Heading-only sections are not emitted; their heading still shows in the children's paths.
    """

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self._stack: list[tuple[int, str]] = []
        self._lines: list[str] = []

    @property
    def heading_path(self) -> tuple[str, ...]:
        """Headings enclosing the text being written, outermost first."""
        return tuple(title for _, title in self._stack)

    def heading(self, level: int, title: str) -> None:
        """Close the current section and open one under ``title`` at ``level`` (1 = outermost)."""
        self.flush()
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, title))

    def add(self, line: str) -> None:
        """Append one line of body text to the current section."""
        self._lines.append(line)

    def drop_last(self, count: int) -> None:
        """Take back the last ``count`` body lines (a paragraph that turned out to be a heading)."""
        if count:
            del self._lines[-count:]

    def flush(self) -> None:
        """Emit the pending body text as a Section when it holds anything but blank lines."""
        text = trim_blank_lines(self._lines)
        self._lines = []
        if text:
            self.sections.append(Section(text=text, heading_path=self.heading_path))


def parse(data: bytes, name: str) -> ParsedDocument:
    """Parse plain text into a single section; the title is a man page's NAME line, else the first
    non-empty line."""
    text, encoding = decode_text(data)
    body = trim_blank_lines(normalize_newlines(text).split("\n"))
    sections = [Section(text=body)] if body else []
    return ParsedDocument(
        title=_man_page_name(body) or first_line(body) or file_stem(name),
        sections=sections,
        mime=MIME,
        metadata={"encoding": encoding},
    )


#: A man page as ``man`` prints it: a NAME heading near the top, the page's name and summary under it
#: (its first line, ``GIT-STASH(1)  Git Manual  GIT-STASH(1)``, says less).
_MAN_NAME = re.compile(r"^NAME[ \t]*\n[ \t]+(\S[^\n]{0,200})", re.MULTILINE)


def _man_page_name(body: str) -> str | None:
    """The ``git-stash - Stash the changes…`` line of a man page, else None."""
    found = _MAN_NAME.search(body, 0, 2000)
    return one_line(found.group(1)) if found else None
