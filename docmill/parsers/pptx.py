"""PPTX: one section per slide in presentation order, under the slide's title, read as a stream.

A slide's text is the paragraphs of its shapes in the order the slide lists them (groups included),
tables as `a | b` lines, then its speaker notes. Dates, footers and slide numbers repeated from the
master are left out, and so are charts, SmartArt, comments and the text of images.

A "slot" below is a shape bound to a slot of the slide's layout (its ``p:ph`` element: title, body,
date, footer, slide number), which is what tells a title from the rest.
"""

from __future__ import annotations

from typing import Any

from docmill.errors import DocumentTooLargeError
from docmill.models import ParsedDocument
from docmill.parsers.detect import file_stem
from docmill.parsers.package import (
    HYPERLINK_RELTYPE,
    MAX_EXPANDED_BYTES,
    OFFICE_RELS,
    REL_ID,
    Package,
    PlaceReader,
    external_links,
    ooxml_core,
    ooxml_main,
    read_package,
    target_of,
    targets_by_id,
)
from docmill.parsers.text import SectionWriter, one_line

MIME = "application/vnd.openxmlformats-officedocument.presentationml.presentation"

#: Slides in one presentation; every one is a part, read once.
MAX_SLIDES = 10_000
NOTES_PREFIX = "Notes: "

_P = "http://schemas.openxmlformats.org/presentationml/2006/main}"
_A = "http://schemas.openxmlformats.org/drawingml/2006/main}"
_MC = "http://schemas.openxmlformats.org/markup-compatibility/2006}"
_SLIDE_RELTYPE = OFFICE_RELS + "slide"
_NOTES_RELTYPE = OFFICE_RELS + "notesSlide"
_DEFAULT_MAIN_PART = "ppt/presentation.xml"
_TITLE_SLOTS = frozenset({"title", "ctrTitle"})
# Slots a slide shows from its master on every slide: the same text each time.
_REPEATED_SLOTS = frozenset({"dt", "ftr", "sldNum", "hdr"})

_PRESENTATION_PLACES: dict[tuple[str, str], str] = {
    ("root", _P + "presentation"): "presentation",
    ("presentation", _P + "sldIdLst"): "slides",
    ("slides", _P + "sldId"): "slide",
}
_SLIDE_PLACES: dict[tuple[str, str], str] = {
    ("root", _P + "sld"): "slide",
    ("root", _P + "notes"): "slide",
    ("slide", _P + "cSld"): "common",
    ("common", _P + "spTree"): "tree",
    ("tree", _P + "grpSp"): "tree",
    # Newer content comes with a fallback for older readers: the choice is read, the fallback is not.
    ("tree", _MC + "AlternateContent"): "alternate",
    ("alternate", _MC + "Choice"): "tree",
    ("tree", _P + "sp"): "shape",
    ("shape", _P + "nvSpPr"): "properties",
    ("properties", _P + "nvPr"): "app properties",
    ("app properties", _P + "ph"): "slot",
    ("shape", _P + "txBody"): "text",
    ("tree", _P + "graphicFrame"): "frame",
    ("frame", _A + "graphic"): "graphic",
    ("graphic", _A + "graphicData"): "graphic data",
    ("graphic data", _A + "tbl"): "table",
    ("table", _A + "tr"): "tr",
    ("tr", _A + "tc"): "tc",
    ("tc", _A + "txBody"): "text",
    ("text", _A + "p"): "p",
    ("p", _A + "r"): "run",
    ("p", _A + "fld"): "run",
    ("p", _A + "br"): "br",
    ("run", _A + "t"): "t",
}


def parse(data: bytes, name: str) -> ParsedDocument:
    """Parse a PPTX; a package that cannot be read raises CorruptDocumentError."""
    return read_package(data, name, "PPTX", lambda package: _read(package, name), MAX_EXPANDED_BYTES)


def _read(package: Package, name: str) -> ParsedDocument:
    """Read the slide list, then each slide and its notes, in presentation order."""
    main, package_rels = ooxml_main(package, _DEFAULT_MAIN_PART)
    presentation = _PresentationReader()
    package.stream(main, presentation.start, presentation.end)
    slides = targets_by_id(package.relationships(main, {_SLIDE_RELTYPE}), _SLIDE_RELTYPE, main)

    writer = SectionWriter()
    links: list[str] = []
    done: set[str] = set()
    for rel_id in presentation.slide_ids:
        part = slides.get(rel_id)
        if part is None or part in done:
            continue  # a dangling id, or a second entry for a slide already read
        done.add(part)
        slide = _SlideReader(notes=False)
        package.stream(part, slide.start, slide.end, slide.data)
        rels = package.relationships(part, {_NOTES_RELTYPE, HYPERLINK_RELTYPE})
        notes = _SlideReader(notes=True)
        notes_part = target_of(rels, _NOTES_RELTYPE, part)
        if notes_part in package.members:
            package.stream(notes_part, notes.start, notes.end, notes.data)
        writer.heading(1, slide.title or f"Slide {len(done)}")
        for line in slide.lines:
            writer.add(line)
        for index, line in enumerate(notes.lines):
            writer.add(NOTES_PREFIX + line if index == 0 else line)
        writer.flush()
        links.extend(external_links(rels))

    core = ooxml_core(package, package_rels)
    metadata: dict[str, Any] = {"slides": len(done)}
    if core.author:
        metadata["author"] = core.author
    return ParsedDocument(title=core.title or file_stem(name), sections=writer.sections, mime=MIME,
                          metadata=metadata, links=list(dict.fromkeys(links)))


class _PresentationReader(PlaceReader):
    """The relationship ids of the slides, in presentation order."""

    PLACES = _PRESENTATION_PLACES

    def __init__(self) -> None:
        super().__init__()
        self.slide_ids: list[str] = []

    def opened(self, place: str, parent: str, tag: str, attrs: dict[str, str]) -> None:
        if place == "slide":
            if len(self.slide_ids) >= MAX_SLIDES:
                raise DocumentTooLargeError(f"PPTX lists over {MAX_SLIDES:,} slides")
            self.slide_ids.append(attrs.get(REL_ID, ""))


class _SlideReader(PlaceReader):
    """The title and the text lines of one slide, or the notes of one (its body slot only).

    Memory holds the text of the slide: its title is written first, wherever its shape comes.
    """

    PLACES = _SLIDE_PLACES

    def __init__(self, notes: bool) -> None:
        super().__init__()
        self.lines: list[str] = []
        self._notes = notes
        self._titles: list[str] = []
        self._shape = "body"  # where the paragraphs of the shape being read go: body, title or skip
        self._text: list[str] = []
        self._cell: list[str] = []
        self._merged = False
        self._row: list[str] = []

    @property
    def title(self) -> str:
        """The text of the slide's title slot, on one line ('' when it has none)."""
        return one_line(" ".join(self._titles))

    def opened(self, place: str, parent: str, tag: str, attrs: dict[str, str]) -> None:
        if place == "p":
            self._text = []
        elif place == "br":
            self._text.append("\n")
        elif place == "shape":
            # A shape in notes is read only when it fills the notes body slot (see "slot").
            self._shape = "skip" if self._notes else "body"
        elif place == "slot":
            self._shape = self._slot_use(attrs.get("type", "obj"))
        elif place == "frame":
            self._shape = "skip" if self._notes else "body"
        elif place == "tc":
            self._cell = []
            # A cell that continues a horizontal merge is covered by the one before it: written once.
            self._merged = attrs.get("hMerge") in ("1", "true")
        elif place == "tr":
            self._row = []

    def _slot_use(self, kind: str) -> str:
        if self._notes:
            return "body" if kind == "body" else "skip"
        if kind in _TITLE_SLOTS:
            return "title"
        return "skip" if kind in _REPEATED_SLOTS else "body"

    def data(self, text: str) -> None:
        if self.places[-1] == "t":
            self._text.append(text)

    def closed(self, place: str) -> None:
        if place == "p":
            self._end_paragraph("".join(self._text))
        elif place == "tc" and not self._merged:
            self._row.append(one_line(" ".join(self._cell)))
        elif place == "tr" and any(self._row) and self._shape != "skip":
            self.lines.append(" | ".join(self._row))

    def _end_paragraph(self, text: str) -> None:
        if self.places[-2] == "tc":  # the paragraph's text body is a table cell's
            self._cell.append(text)
        elif self._shape == "title":
            self._titles.append(text)
        elif self._shape == "body" and text.strip():
            self.lines.append(text.strip())
