"""EPUB: the XHTML documents of the spine in reading order, each read by the HTML parser.

META-INF/container.xml names the package document (OPF); its manifest says where each item is and of
what type, its spine in which order they are read. Each XHTML item's sections follow the previous
one's, with the heading paths of its own headings. Other spine items (images, SVG) are skipped, and a
book whose text is encrypted (DRM) is refused as corrupt: its bytes are not text.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from docmill.errors import DocumentTooLargeError
from docmill.models import ParsedDocument, Section
from docmill.parsers import html
from docmill.parsers.detect import file_stem
from docmill.parsers.package import DC, MAX_EXPANDED_BYTES, MAX_MEMBERS, CoreReader, Package, read_package, resolve

MIME = "application/epub+zip"

#: An HTML file this large is refused by default (max_file_size), and one XHTML document is parsed
#: whole, as a tree: a larger one is no chapter.
MAX_DOCUMENT_BYTES = 100_000_000
#: Manifest items and spine entries; each names a part, and a package holds at most MAX_MEMBERS.
MAX_ITEMS = MAX_MEMBERS

_CONTAINER = "META-INF/container.xml"
_ENCRYPTION = "META-INF/encryption.xml"
_CONTAINER_NS = "urn:oasis:names:tc:opendocument:xmlns:container}"
_OPF_MEDIA_TYPE = "application/oebps-package+xml"
_XENC = "http://www.w3.org/2001/04/xmlenc#}"
_XHTML_TYPES = frozenset({"application/xhtml+xml", "text/html"})
# Font obfuscation (IDPF, Adobe) "encrypts" fonts only, so that they cannot be copied out; the text
# stays readable.
_FONT_OBFUSCATION = frozenset({"http://www.idpf.org/2008/embedding", "http://ns.adobe.com/pdf/enc#RC"})
_LINK_SCHEMES = frozenset({"http", "https"})
# On a web page a <header> is the site's banner; in a book it holds a chapter's heading.
_KEPT_TAGS = frozenset({"header"})


def parse(data: bytes, name: str) -> ParsedDocument:
    """Parse an EPUB; a package that cannot be read raises CorruptDocumentError."""
    return read_package(data, name, "EPUB", lambda package: _read(package, name), MAX_EXPANDED_BYTES)


def _read(package: Package, name: str) -> ParsedDocument:
    """Find the package document, then parse the spine's XHTML documents in order."""
    opf_part = _package_document(package)
    opf = _PackageReader()
    # Packages of EPUB 2 and before may declare an external DTD; expat never fetches it.
    package.stream(opf_part, opf.start, opf.end, opf.data, external_dtd=True)
    encrypted = _encrypted_parts(package)

    sections: list[Section] = []
    links: list[str] = []
    done: set[str] = set()
    for idref in opf.spine:
        item = opf.manifest.get(idref)
        if item is None or item[1] not in _XHTML_TYPES:
            continue  # a dangling reference, or an image or SVG page: no text to read
        part = _member(opf_part, item[0])
        if part in done:
            continue
        done.add(part)
        if part in encrypted:
            raise ValueError(f"{part} is encrypted (DRM)")
        chapter = html.parse(package.read(part, MAX_DOCUMENT_BYTES), part, keep=_KEPT_TAGS)
        sections.extend(chapter.sections)
        links.extend(link for link in chapter.links if urlsplit(link).scheme in _LINK_SCHEMES)

    metadata: dict[str, Any] = {"documents": len(done)}
    if opf.core.author:
        metadata["author"] = opf.core.author
    if opf.language:
        metadata["lang"] = opf.language
    return ParsedDocument(title=opf.core.title or file_stem(name), sections=sections, mime=MIME,
                          metadata=metadata, links=list(dict.fromkeys(links)))


def _package_document(package: Package) -> str:
    """The OPF the container names: its first rootfile of the package type, else its first rootfile."""
    rootfiles: list[tuple[str, str]] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        if tag == _CONTAINER_NS + "rootfile" and attrs.get("full-path") and len(rootfiles) < MAX_ITEMS:
            rootfiles.append((attrs["full-path"], attrs.get("media-type", "")))

    package.stream(_CONTAINER, start)
    if not rootfiles:
        raise ValueError(f"{_CONTAINER} names no package document")
    return next((path for path, media_type in rootfiles if media_type == _OPF_MEDIA_TYPE), rootfiles[0][0])


def _member(opf_part: str, href: str) -> str:
    """The package member a manifest href names: a URL (fragment and escapes dropped) relative to the
    package document."""
    return resolve(opf_part, unquote(urlsplit(href).path))


def _encrypted_parts(package: Package) -> frozenset[str]:
    """Members META-INF/encryption.xml lists as encrypted by other means than font obfuscation."""
    if _ENCRYPTION not in package.members:
        return frozenset()
    found: set[str] = set()
    method = ""

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal method
        if tag == _XENC + "EncryptionMethod":
            method = attrs.get("Algorithm", "")
        elif tag == _XENC + "CipherReference" and method not in _FONT_OBFUSCATION and len(found) < MAX_ITEMS:
            # References are relative to the root of the container.
            found.add(_member("", attrs.get("URI", "")))

    package.stream(_ENCRYPTION, start)
    return frozenset(found)


class _PackageReader:
    """Title and author, the manifest {id: (href, media type)} and the spine's idrefs, from the OPF.

    The package elements are matched by local name: EPUB 2 and 3 share one namespace, but the OPFs of
    some converters use none.
    """

    def __init__(self) -> None:
        self.core = CoreReader()
        self.manifest: dict[str, tuple[str, str]] = {}
        self.spine: list[str] = []
        self.language = ""
        self._in_language = False

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        local = tag.rpartition("}")[2]
        if local == "item" and attrs.get("id") and attrs.get("href"):
            self._check(len(self.manifest))
            self.manifest[attrs["id"]] = (attrs["href"], attrs.get("media-type", "").strip().lower())
        elif local == "itemref" and attrs.get("idref"):
            self._check(len(self.spine))
            self.spine.append(attrs["idref"])
        elif tag == DC + "language" and not self.language:
            self._in_language = True
        else:
            self.core.start(tag, attrs)

    def data(self, text: str) -> None:
        if self._in_language:
            self.language += text.strip()
        self.core.data(text)

    def end(self, tag: str) -> None:
        self._in_language = False
        self.core.end(tag)

    @staticmethod
    def _check(count: int) -> None:
        if count >= MAX_ITEMS:
            raise DocumentTooLargeError(f"EPUB package document lists over {MAX_ITEMS:,} items")
