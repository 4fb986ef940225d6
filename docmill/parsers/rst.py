"""reStructuredText: sections at its section titles, each under its heading path, as Markdown gets.

A title is a line of text under a blank line (or at the start), underlined, and maybe overlined too,
with one punctuation character repeated. reStructuredText gives no fixed level to a style: the first
style used is level 1, the next new one level 2, and so on, an overlined style being another style
than the same character underlined only. Everything else (directives, roles, literal blocks) is kept
as text: what a reader searches for is in it.
"""

from __future__ import annotations

import string

from docmill.models import ParsedDocument
from docmill.parsers.detect import file_stem
from docmill.parsers.text import SectionWriter, decode_text, first_line, normalize_newlines, one_line

MIME = "text/x-rst"

#: The characters reStructuredText allows for section adornments (any printable 7-bit punctuation).
_ADORNMENT = frozenset(string.punctuation)
#: Shortest underline taken as one (docutils accepts a short one, with a warning).
_MIN_RULE = 3
#: A longer line is prose that happens to stand above a rule, not a title.
_MAX_TITLE_CHARS = 200


def parse(data: bytes, name: str) -> ParsedDocument:
    """Parse reStructuredText into sections at its titles; the document's title is its first one."""
    text, encoding = decode_text(data)
    lines = normalize_newlines(text).split("\n")
    writer = SectionWriter()
    styles: list[tuple[bool, str]] = []
    title: str | None = None
    i = 0
    while i < len(lines):
        found = _title_at(lines, i)
        if found is None:
            writer.add(lines[i])
            i += 1
            continue
        style, heading, used = found
        if style not in styles:
            styles.append(style)
        writer.heading(styles.index(style) + 1, heading)
        title = title or heading
        i += used
    writer.flush()
    if title is None:
        title = first_line("\n".join(section.text for section in writer.sections)) or file_stem(name)
    return ParsedDocument(title=title, sections=writer.sections, mime=MIME, metadata={"encoding": encoding})


def _title_at(lines: list[str], i: int) -> tuple[tuple[bool, str], str, int] | None:
    """((overlined, character), title, lines used) when a section title starts at line ``i``."""
    if i and lines[i - 1].strip():
        return None
    rule = _rule(lines[i])
    if rule and i + 2 < len(lines) and _rule(lines[i + 2]) == rule:
        heading = lines[i + 1].strip()  # an overlined title may be inset
        if heading and not _rule(heading) and len(heading) <= _MAX_TITLE_CHARS:
            return (True, rule), one_line(heading), 3
        return None
    line = lines[i]
    heading = line.strip()
    if (not heading or rule or line[0].isspace() or len(heading) > _MAX_TITLE_CHARS
            or i + 1 >= len(lines)):
        return None
    under = _rule(lines[i + 1])
    if not under:
        return None
    return (False, under), one_line(heading), 2


def _rule(line: str) -> str:
    """The adornment character of a line made of one repeated (at least _MIN_RULE times), else ''."""
    stripped = line.rstrip()
    if len(stripped) < _MIN_RULE or stripped[0] not in _ADORNMENT or line[0].isspace():
        return ""
    return stripped[0] if stripped == stripped[0] * len(stripped) else ""
