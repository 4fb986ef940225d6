"""What the zip-packaged formats share (DOCX, XLSX, PPTX, EPUB, ODT): the package opened with its
size checked first, its XML parts streamed through expat, OOXML relationships and Dublin Core titles.

Parts are read with expat, one event per tag and nothing kept but the text a reader asks for: a whole
tree of a part costs memory in proportion to its tags, and a small package can hold millions of them.
"""

from __future__ import annotations

import io
import posixpath
import zipfile
from collections.abc import Callable, Collection, Mapping
from typing import ClassVar, TypeVar
from xml.parsers import expat

from docmill.errors import CorruptDocumentError, DocmillError, DocumentTooLargeError

#: A few MB of zipped XML can unzip to gigabytes (a zip bomb), which even streamed take many minutes
#: to read. The sizes a package's directory declares are what zipfile will read; real documents,
#: images included, stay far below this.
MAX_EXPANDED_BYTES = 1_000_000_000
#: zipfile keeps ~500 bytes per member of the directory it reads: 100 MB of empty members is 2 million
#: of them, a GB. Real packages hold a few thousand parts at most (an EPUB with its images).
MAX_MEMBERS = 100_000

# Names as expat reports them with namespace_separator="}": "<uri>}<local>".
DC = "http://purl.org/dc/elements/1.1/}"
OFFICE_RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/"
#: The attribute naming a relationship (r:id) in OOXML parts.
REL_ID = "http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
MAIN_RELTYPE = OFFICE_RELS + "officeDocument"
HYPERLINK_RELTYPE = OFFICE_RELS + "hyperlink"
CORE_RELTYPE = "http://schemas.openxmlformats.org/package/2006/relationships/metadata/core-properties"
_RELATIONSHIP = "http://schemas.openxmlformats.org/package/2006/relationships}Relationship"
#: Strict Open XML (ISO/IEC 29500 Strict, Word's "Strict Open XML Document") names the same elements
#: and relationship types under these URIs: ``<STRICT>a/b`` is the transitional ``<TRANSITIONAL>a/2006/b``.
_STRICT = "http://purl.oclc.org/ooxml/"
_TRANSITIONAL = "http://schemas.openxmlformats.org/"
_DIRECTORY_ENTRY = b"PK\x01\x02"

StartHandler = Callable[[str, dict[str, str]], None]
EndHandler = Callable[[str], None]
DataHandler = Callable[[str], None]
_T = TypeVar("_T")


def read_package(data: bytes, name: str, kind: str, read: Callable[[Package], _T],
                 max_expanded: int = MAX_EXPANDED_BYTES) -> _T:
    """``read(package)`` on the zip in ``data``, refused as a bomb when it declares more than
    ``max_expanded`` bytes; anything that breaks on the way raises CorruptDocumentError naming ``kind``."""
    check_member_count(data, name, kind)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            _check_expansion(archive, name, kind, max_expanded)
            return read(Package(archive, kind))
    except (DocmillError, MemoryError):
        raise  # a reason of its own (a bomb, an encrypted part), or no fault of the document
    except Exception as exc:  # zipfile, zlib and expat each raise their own types
        raise CorruptDocumentError(f"corrupt {kind}: {exc or type(exc).__name__} ({name})") from exc


def check_member_count(data: bytes, name: str, kind: str) -> None:
    """Refuse a zip whose directory holds over MAX_MEMBERS entries, before zipfile reads them all.

    The entries are counted by their signature: the count the end-of-directory record declares is not
    what zipfile goes by (it reads entries until the directory's size is used up), so it can lie.
    """
    count = data.count(_DIRECTORY_ENTRY)
    if count > MAX_MEMBERS:
        raise DocumentTooLargeError(f"{kind} holds {count:,} parts, over {MAX_MEMBERS:,}: refused as a likely "
                                    f"zip bomb ({name})")


def _check_expansion(archive: zipfile.ZipFile, name: str, kind: str, limit: int) -> None:
    """Refuse a package whose parts unzip to more than ``limit`` bytes."""
    expanded = sum(info.file_size for info in archive.infolist())
    if expanded > limit:
        raise DocumentTooLargeError(f"{kind} unzips to {expanded / 1e9:.1f} GB, over {limit / 1e9:.0f} GB: "
                                    f"refused as a likely zip bomb ({name})")


class Package:
    """An open zip package: its member names, and its parts read as XML streams or bytes."""

    def __init__(self, archive: zipfile.ZipFile, kind: str) -> None:
        self.kind = kind
        self.members = frozenset(archive.namelist())
        self._archive = archive
        self._strict = False  # set when a relationship type says so: then every part is read as transitional

    def stream(self, part: str, start: StartHandler, end: EndHandler | None = None,
               data: DataHandler | None = None, *, external_dtd: bool = False) -> None:
        """Feed one XML part to expat handlers, without building a tree. A document type declaration
        is refused: its entity definitions are what XML bombs are made of. ``external_dtd`` lets one
        through that only names an external DTD (old EPUB packages do), which expat never loads."""
        parser = expat.ParserCreate(namespace_separator="}")
        parser.buffer_text = True  # one data call per text run, not one per expat buffer

        def doctype(_name: str, _system: str | None, _public: str | None, internal_subset: int) -> None:
            if not external_dtd:
                raise ValueError(f"a document type declaration, which {self.kind} parts never have")
            if internal_subset:
                raise ValueError(f"a document type declaration with entity definitions in {part}")

        parser.StartDoctypeDeclHandler = doctype
        if self._strict:
            start, end = _as_transitional(start, end)
        parser.StartElementHandler = start
        if end is not None:
            parser.EndElementHandler = end
        if data is not None:
            parser.CharacterDataHandler = data
        with self._open(part) as stream:
            try:
                parser.ParseFile(stream)
            except expat.ExpatError as exc:
                raise ValueError(f"{part}: {exc}") from exc

    def read(self, part: str, limit: int) -> bytes:
        """The bytes of ``part``; DocumentTooLargeError when it declares more than ``limit``."""
        size = self._archive.getinfo(part).file_size if part in self.members else 0
        if size > limit:
            raise DocumentTooLargeError(f"{self.kind} part {part} unzips to {size / 1e6:.0f} MB, over "
                                        f"{limit / 1e6:.0f} MB")
        with self._open(part) as stream:
            return stream.read()

    def relationships(self, part: str, reltypes: Collection[str]) -> list[dict[str, str]]:
        """Attributes of the OOXML relationships of ``part`` ('' for the package itself) whose type is
        one of ``reltypes``, in file order (a package may relate thousands of images)."""
        folder, _, file = part.rpartition("/")
        rels_part = posixpath.join(folder, "_rels", f"{file}.rels")
        if rels_part not in self.members:
            return []
        found: list[dict[str, str]] = []

        def start(tag: str, attrs: dict[str, str]) -> None:
            if tag != _RELATIONSHIP:
                return
            kind = attrs.get("Type", "")
            if kind.startswith(_STRICT):
                self._strict = True
                attrs = {**attrs, "Type": transitional(kind)}
            if attrs.get("Type") in reltypes:
                found.append(attrs)

        self.stream(rels_part, start)
        return found

    def _open(self, part: str) -> zipfile.ZipExtFile:
        if part not in self.members:
            raise ValueError(f"the part {part} is missing")
        return self._archive.open(part)


def transitional(name: str) -> str:
    """A Strict Open XML URI (or ``uri}local`` name) in its transitional spelling; others unchanged."""
    if not name.startswith(_STRICT):
        return name
    area, _, rest = name[len(_STRICT):].partition("/")
    return f"{_TRANSITIONAL}{area}/2006/{rest}"


def _as_transitional(start: StartHandler, end: EndHandler | None) -> tuple[StartHandler, EndHandler | None]:
    """Handlers that see a Strict part's element and attribute names as transitional ones."""
    def strict_start(tag: str, attrs: dict[str, str]) -> None:
        start(transitional(tag), {transitional(key): value for key, value in attrs.items()})

    def strict_end(tag: str) -> None:
        assert end is not None
        end(transitional(tag))

    return strict_start, (strict_end if end is not None else None)


def resolve(source: str, target: str) -> str:
    """Package member a relationship target or manifest reference names: relative to the folder of
    ``source``, unless it starts with a slash."""
    if target.startswith("/"):
        return posixpath.normpath(target.lstrip("/"))
    return posixpath.normpath(posixpath.join(posixpath.dirname(source), target))


def target_of(rels: list[dict[str, str]], reltype: str, source: str) -> str:
    """Member the first relationship of ``reltype`` points to ('' when there is none)."""
    target = next((rel.get("Target", "") for rel in rels if rel.get("Type") == reltype), "")
    return resolve(source, target) if target else ""


def targets_by_id(rels: list[dict[str, str]], reltype: str, source: str) -> dict[str, str]:
    """{relationship id: member} of the internal relationships of ``reltype``."""
    return {rel["Id"]: resolve(source, rel["Target"]) for rel in rels
            if rel.get("Type") == reltype and rel.get("Id") and rel.get("Target")
            and rel.get("TargetMode") != "External"}


def external_links(rels: list[dict[str, str]]) -> list[str]:
    """External hyperlink targets, in order, without duplicates."""
    return list(dict.fromkeys(
        rel["Target"] for rel in rels
        if rel.get("Type") == HYPERLINK_RELTYPE and rel.get("TargetMode") == "External" and rel.get("Target")
    ))


class CoreReader:
    """Title and author from Dublin Core elements: the OOXML core properties (docProps/core.xml), an
    OpenDocument meta.xml, an EPUB package document. The first non-empty value of each is kept."""

    def __init__(self, author_tag: str = DC + "creator") -> None:
        self.title = ""
        self.author = ""
        self._author_tag = author_tag
        self._field: str | None = None
        self._text: list[str] = []

    def start(self, tag: str, _: dict[str, str]) -> None:
        if tag in (DC + "title", self._author_tag):
            self._field = tag
            self._text = []

    def data(self, text: str) -> None:
        if self._field is not None:
            self._text.append(text)

    def end(self, tag: str) -> None:
        if tag == self._field:
            value = "".join(self._text).strip()
            if tag == DC + "title":
                self.title = self.title or value
            else:
                self.author = self.author or value
            self._field = None


def ooxml_main(package: Package, default: str) -> tuple[str, list[dict[str, str]]]:
    """An OOXML package's main part (from its relationships, else ``default``), and the package's own
    relationships to it and to its core properties."""
    rels = package.relationships("", {MAIN_RELTYPE, CORE_RELTYPE})
    return target_of(rels, MAIN_RELTYPE, "") or default, rels


def ooxml_core(package: Package, package_rels: list[dict[str, str]]) -> CoreReader:
    """The core properties of an OOXML package (empty when it has none)."""
    core = CoreReader()
    core_part = target_of(package_rels, CORE_RELTYPE, "")
    if core_part in package.members:
        package.stream(core_part, core.start, core.end, core.data)
    return core


class PlaceReader:
    """Base of a reader that follows only the elements it knows: each open element has a place, from its
    parent's place and its own tag (the table ``PLACES``); any other element has the place '', and so
    has everything inside it."""

    PLACES: ClassVar[Mapping[tuple[str, str], str]] = {}

    def __init__(self) -> None:
        self.places: list[str] = ["root"]  # the place of each open element

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        parent = self.places[-1]
        place = self.PLACES.get((parent, tag), "")
        self.places.append(place)
        self.opened(place, parent, tag, attrs)

    def end(self, _: str) -> None:
        self.closed(self.places.pop())

    def opened(self, place: str, parent: str, tag: str, attrs: dict[str, str]) -> None:
        """An element opened at ``place`` inside one at ``parent``."""

    def closed(self, place: str) -> None:
        """The element at ``place`` closed."""


def number(value: str | None, default: int) -> int:
    """An integer attribute, ``default`` when absent or not a number."""
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default
