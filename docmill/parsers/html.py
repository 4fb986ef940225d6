"""HTML (selectolax / lexbor): the main content only, split on h1-h6, one block per line."""

from __future__ import annotations

import html
import re

from selectolax.lexbor import LexborHTMLParser, LexborNode

from docmill.models import ParsedDocument, Section
from docmill.parsers.detect import file_stem
from docmill.parsers.text import SectionWriter, bom_encoding, decode_text

MIME = "text/html"

# Page furniture and non-content: never part of what a reader came for.
_DROPPED_TAGS = ["script", "style", "noscript", "nav", "header", "footer", "aside", "form", "svg", "template"]
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
# fmt: off
_BLOCKS = frozenset(
    {
        "address", "article", "blockquote", "body", "caption", "center", "dd", "details", "dialog", "div",
        "dl", "dt", "fieldset", "figcaption", "figure", "hr", "html", "legend", "li", "main", "menu",
        "ol", "p", "section", "summary", "table", "tbody", "tfoot", "thead", "ul",
    }
)
# fmt: on
_CELLS = frozenset({"td", "th"})
_SKIPPED_NODES = frozenset({"-comment", "-doctype", "head", "title", "meta", "link", "iframe", "object"})
_IGNORED_LINK_PREFIXES = ("#", "javascript:", "mailto:", "tel:", "data:")
#: Lexbor builds the tree in time that grows with the square of the nesting depth (100,000 nested
#: <div>s took 26 s). Real pages nest a few dozen levels; deeper markup is read as plain text.
MAX_NESTING = 1_000
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)")
_ANY_TAG = re.compile(r"<[^>]*>")
# Elements that never hold children, or whose end tag is optional: they add no depth of their own.
_FLAT_TAGS = frozenset({
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr",
    "p", "li", "dt", "dd", "tr", "td", "th", "option", "optgroup", "colgroup", "thead", "tbody", "tfoot",
    "rb", "rt", "rp", "caption",
})
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([\w.:-]+)""", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


def parse(data: bytes, name: str, *, keep: frozenset[str] = frozenset()) -> ParsedDocument:
    """Parse HTML: noise removed, main/article preferred, sections per heading, links collected.

    ``keep`` names page-furniture tags to read all the same (in a book, a <header> is a chapter's).
    """
    markup, encoding = _decode_html(data)
    if markup.count("<") > MAX_NESTING and _nesting(markup) > MAX_NESTING:
        return _as_plain_text(markup, name, encoding)
    tree = LexborHTMLParser(markup)

    # Links come from the whole page, navigation included: that is how a crawler finds the other pages.
    links = _links(tree)
    title = _node_text(tree.css_first("head > title") or tree.css_first("title"))
    tree.strip_tags([tag for tag in _DROPPED_TAGS if tag not in keep])
    first_h1 = _node_text(tree.css_first("h1"))

    articles = tree.css("article")
    root = tree.css_first("main") or (articles[0] if len(articles) == 1 else None) or tree.body or tree.root
    writer = _BlockWriter()
    if root is not None:
        writer.walk(root)
    writer.finish()

    metadata: dict[str, object] = {"encoding": encoding}
    html_node = tree.css_first("html")
    if html_node is not None and html_node.attributes.get("lang"):
        metadata["lang"] = html_node.attributes["lang"]
    base = tree.css_first("base[href]")
    if base is not None and base.attributes.get("href"):
        metadata["base_href"] = base.attributes["href"]
    return ParsedDocument(
        title=title or first_h1 or file_stem(name),
        sections=writer.sections,
        mime=MIME,
        metadata=metadata,
        links=links,
    )


def _nesting(markup: str) -> int:
    """How deep the elements nest, about (stops counting once past MAX_NESTING). ``<div/>`` opens a
    div in HTML, so a trailing slash is no end; ~45 ms per MB of markup, a fraction of lexbor's own."""
    depth = 0
    for closing, name in _TAG.findall(markup):
        if name.lower() in _FLAT_TAGS:
            continue
        depth = max(0, depth - 1) if closing else depth + 1
        if depth > MAX_NESTING:
            break
    return depth


def _as_plain_text(markup: str, name: str, encoding: str) -> ParsedDocument:
    """Markup too deeply nested to build a tree of: its text, one section, no structure."""
    text = "\n".join(line for line in (_SPACES.sub(" ", part).strip()
                                       for part in html.unescape(_ANY_TAG.sub("\n", markup)).split("\n"))
                      if line)
    return ParsedDocument(title=file_stem(name), sections=[Section(text=text)] if text else [],
                          mime=MIME, metadata={"encoding": encoding,
                                               "structure": f"ignored: elements nested over {MAX_NESTING} deep"})


def _decode_html(data: bytes) -> tuple[str, str]:
    """Decode by BOM, then UTF-8, then the page's own <meta charset>, then charset detection."""
    if bom_encoding(data) is None:
        try:
            return data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            declared = _META_CHARSET.search(data[:4096])
            if declared:
                codec = declared.group(1).decode("ascii", errors="replace")
                try:
                    return data.decode(codec, errors="replace"), codec
                except LookupError:
                    pass  # an unknown charset name: fall back to detection
    return decode_text(data)


def _links(tree: LexborHTMLParser) -> list[str]:
    """Raw href targets of <a> elements, in order, without duplicates or in-page anchors."""
    links: list[str] = []
    seen: set[str] = set()
    for anchor in tree.css("a[href]"):
        target = (anchor.attributes.get("href") or "").strip()
        if target and not target.lower().startswith(_IGNORED_LINK_PREFIXES) and target not in seen:
            seen.add(target)
            links.append(target)
    return links


def _node_text(node: LexborNode | None) -> str:
    """Collapsed text of a node ('' for None)."""
    if node is None:
        return ""
    return _SPACES.sub(" ", node.text(deep=True) or "").strip()


class _BlockWriter:
    """Walks the DOM and writes one line per block, starting a section at each heading."""

    def __init__(self) -> None:
        self._writer = SectionWriter()
        self._inline: list[str] = []
        self._prefix = ""

    @property
    def sections(self) -> list[Section]:
        """Sections written so far."""
        return self._writer.sections

    def walk(self, root: LexborNode) -> None:
        """Write the readable text under ``root``."""
        # An explicit stack instead of recursion: real pages nest deeper than Python's recursion limit.
        stack: list[LexborNode | None] = _children_reversed(root)
        while stack:
            node = stack.pop()
            if node is None:  # the end of a block element
                self._end_line()
                continue
            tag = node.tag or ""
            if tag == "-text":
                self._inline.append(node.text_content or "")
            elif tag in _SKIPPED_NODES or "hidden" in node.attributes:
                continue
            elif tag in _HEADINGS:
                self._end_line()
                heading = _node_text(node)
                if heading:
                    self._writer.heading(_HEADINGS[tag], heading)
            elif tag == "br":
                self._end_line()
            elif tag == "pre":
                self._end_line()
                for line in (node.text(deep=True) or "").split("\n"):
                    self._writer.add(line.rstrip())
            elif tag == "tr":
                self._end_line()
                cells = [_cell_text(cell) for cell in node.iter() if cell.tag in _CELLS]
                if any(cells):
                    self._writer.add(" | ".join(cells))
            elif tag == "li" or tag in _BLOCKS:
                self._end_line()
                if tag == "li":
                    self._prefix = "- "
                stack.append(None)
                stack.extend(_children_reversed(node))
            else:
                stack.extend(_children_reversed(node))

    def finish(self) -> None:
        """Flush the last line and section."""
        self._end_line()
        self._writer.flush()

    def _end_line(self) -> None:
        line = _SPACES.sub(" ", "".join(self._inline)).strip()
        self._inline = []
        if line:
            self._writer.add(self._prefix + line)
            self._prefix = ""


def _children_reversed(node: LexborNode) -> list[LexborNode | None]:
    """Child nodes (text included) in reverse order, ready to be pushed on a stack."""
    children: list[LexborNode | None] = list(node.iter(include_text=True))
    children.reverse()
    return children


def _cell_text(cell: LexborNode) -> str:
    """A table cell as one line: its blocks joined by spaces."""
    inner = _BlockWriter()
    inner.walk(cell)
    inner.finish()
    return " ".join(" ".join(section.text.split()) for section in inner.sections)
