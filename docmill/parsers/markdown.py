"""Markdown: sections split on ATX and Setext headings, front matter dropped, links collected."""

from __future__ import annotations

import re

import yaml

from docmill.models import ParsedDocument
from docmill.parsers.detect import file_stem
from docmill.parsers.text import SectionWriter, decode_text, normalize_newlines

MIME = "text/markdown"

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
# A line that cannot be the text of a Setext heading (a list item, quote, table row or indented code):
# in those cases a line of dashes below it is a thematic break.
_NOT_SETEXT_TEXT = re.compile(r"^(?: {4}|\t| {0,3}(?:[-*+>|]|\d+[.)])(?:\s|$))")
_INLINE_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)")
_REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?", re.MULTILINE)
_AUTOLINK = re.compile(r"<((?:https?|ftp)://[^\s>]+)>")
_HTML_HREF = re.compile(r"""<a\s[^>]*?href\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.IGNORECASE)
# Targets that never lead to a document: in-page anchors and script/mail pseudo-links.
_IGNORED_LINK_PREFIXES = ("#", "javascript:", "mailto:", "tel:", "data:")
_HEADING_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
#: Front matter is a few lines of metadata; a longer block between two "---" lines is body text.
MAX_FRONT_MATTER_CHARS = 64 * 1024
# libyaml reads 64 KB of hostile YAML in milliseconds and refuses deep nesting; PyYAML's own Python
# loader, for an install without libyaml, takes about a second and raises RecursionError instead.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse(data: bytes, name: str) -> ParsedDocument:
    """Parse Markdown into sections whose heading_path is the stack of enclosing headings."""
    text, encoding = decode_text(data)
    lines = normalize_newlines(text).split("\n")
    front_title, body_start = _front_matter(lines)
    lines = lines[body_start:]

    writer = SectionWriter()
    first_h1: str | None = None
    # Lines of the current paragraph, the text of a possible Setext heading; None inside a list item,
    # quote or table, where a line of dashes is a thematic break instead.
    paragraph: list[str] | None = []
    fence: str | None = None
    prose_lines: list[str] = []  # everything outside fenced code: links in code samples are not links
    for line in lines:
        if fence is not None:
            writer.add(line)
            if _closes_fence(line, fence):
                fence = None
            continue
        opening = _FENCE.match(line)
        if opening:
            fence = opening.group(1)
            paragraph = []
            writer.add(line)
            continue
        prose_lines.append(line)
        atx = _ATX.match(line)
        if atx:
            title = _clean_heading(atx.group(2) or "")
            paragraph = []
            if title:
                level = len(atx.group(1))
                first_h1 = first_h1 or (title if level == 1 else None)
                writer.heading(level, title)
            continue
        setext = _SETEXT.match(line)
        if setext and paragraph:
            title = _clean_heading(" ".join(part.strip() for part in paragraph))
            level = 1 if setext.group(1).startswith("=") else 2
            writer.drop_last(len(paragraph))
            paragraph = []
            first_h1 = first_h1 or (title if level == 1 else None)
            writer.heading(level, title)
            continue
        if not line.strip():
            paragraph = []
        elif paragraph is not None and (paragraph or not _NOT_SETEXT_TEXT.match(line)):
            paragraph.append(line)
        else:
            paragraph = None
        writer.add(line)
    writer.flush()

    return ParsedDocument(
        title=front_title or first_h1 or file_stem(name),
        sections=writer.sections,
        mime=MIME,
        metadata={"encoding": encoding},
        links=extract_links("\n".join(prose_lines)),
    )


def extract_links(markdown_text: str) -> list[str]:
    """Raw targets of inline, reference, auto and HTML links, in order, without duplicates."""
    found: list[tuple[int, str]] = []
    found += [(m.start(), m.group(1)) for m in _INLINE_LINK.finditer(markdown_text)]
    found += [(m.start(), m.group(1)) for m in _REFERENCE_LINK.finditer(markdown_text)]
    found += [(m.start(), m.group(1)) for m in _AUTOLINK.finditer(markdown_text)]
    found += [
        (m.start(), next(group for group in m.groups() if group is not None))
        for m in _HTML_HREF.finditer(markdown_text)
    ]
    links: list[str] = []
    seen: set[str] = set()
    for _, target in sorted(found):
        target = target.strip()
        if target and not target.lower().startswith(_IGNORED_LINK_PREFIXES) and target not in seen:
            seen.add(target)
            links.append(target)
    return links


def _front_matter(lines: list[str]) -> tuple[str | None, int]:
    """Return (title from YAML front matter, index of the first body line)."""
    if not lines or lines[0].strip() != "---":
        return None, 0
    size = 0
    for index in range(1, len(lines)):
        if lines[index].strip() in ("---", "..."):
            break
        size += len(lines[index]) + 1
        if size > MAX_FRONT_MATTER_CHARS:
            return None, 0  # far too long for metadata: the text between two thematic breaks
    else:
        return None, 0  # no closing marker: a thematic break, not front matter
    title = _yaml_title("\n".join(lines[1:index]))
    return title or None, index + 1


def _yaml_title(block: str) -> str | None:
    """The top-level ``title`` of a front matter block when it is a plain value, else None.

    Only the YAML node graph is built, never Python objects: an alias is a reference to its anchor's
    node there, so an alias bomb stays as small as its text. Expanding one (``safe_load`` then
    ``str()`` of the title) took a minute and 3 GB for 400 bytes of "billion laughs".
    """
    try:
        root = yaml.compose(block, Loader=_YAML_LOADER)
    except (yaml.YAMLError, RecursionError):
        # Front matter that is not valid YAML still often carries a readable title line.
        match = re.search(r"^title:\s*(.+?)\s*$", block, re.MULTILINE)
        return match.group(1).strip("'\"").strip() if match else None
    if not isinstance(root, yaml.MappingNode):
        return None
    for key, value in root.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "title":
            # A list or mapping is no title; a scalar's text is kept as written ("1.10", not 1.1).
            return value.value.strip() if isinstance(value, yaml.ScalarNode) else None
    return None


def _closes_fence(line: str, fence: str) -> bool:
    """A fence closes on a line of the same character, at least as long, and nothing else."""
    stripped = line.strip()
    return (
        len(line) - len(line.lstrip(" ")) <= 3 and len(stripped) >= len(fence) and set(stripped) == {fence[0]}
    )


def _clean_heading(raw: str) -> str:
    """Heading text without link and emphasis markup, so paths read like the rendered headings."""
    text = _HEADING_LINK.sub(r"\1", raw)
    text = text.replace("`", "").replace("**", "").replace("__", "")
    return " ".join(text.split()).strip("*_ ")
