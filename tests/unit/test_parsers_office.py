"""XLSX, PPTX, EPUB and ODT: detection by content, what each parser reads, and how broken or hostile
packages fail. The files are written by openpyxl, python-pptx, ebooklib and docutils, or zipped by
tests/corpus.py."""

from __future__ import annotations

import io
import re
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import pptx
import pytest
from docutils.core import publish_string
from ebooklib import epub as epub_writer
from pptx.util import Inches

from docmill.errors import CorruptDocumentError, DocumentTooLargeError, UnsupportedFormatError
from docmill.models import ParsedDocument
from docmill.parsers import EXTENSIONS, SUPPORTED_FORMATS, detect_format, epub, package, parse, xlsx
from tests import corpus

ODT_MIMETYPE = "application/vnd.oasis.opendocument.text"
SPREADSHEET_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"

# (format, builder, its main XML part, the error's name for the format)
PACKAGES: list[tuple[str, Callable[[], bytes], str, str]] = [
    ("xlsx", corpus.fleet_xlsx, "xl/workbook.xml", "XLSX"),
    ("pptx", corpus.beekeeping_pptx, "ppt/presentation.xml", "PPTX"),
    ("epub", corpus.lighthouse_epub, "OEBPS/content.opf", "EPUB"),
    ("odt", corpus.orchard_odt, "content.xml", "ODT"),
]


def replaced(data: bytes, member: str, payload: bytes | None) -> bytes:
    """The package with ``member`` replaced by ``payload`` (or left out, for None), in its place."""
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            if info.filename == member:
                if payload is not None:
                    target.writestr(info, payload)
            else:
                target.writestr(info, source.read(info))
    return buffer.getvalue()


def member(data: bytes, name: str) -> bytes:
    return zipfile.ZipFile(io.BytesIO(data)).read(name)


def texts(document: ParsedDocument) -> list[tuple[tuple[str, ...], str]]:
    return [(section.heading_path, section.text) for section in document.sections]


# --- registration and detection ----------------------------------------------------------------------


def test_the_office_formats_are_registered_with_their_extensions() -> None:
    assert {"xlsx", "pptx", "epub", "odt"} <= set(SUPPORTED_FORMATS)
    assert (EXTENSIONS["xlsx"], EXTENSIONS["pptx"], EXTENSIONS["epub"], EXTENSIONS["odt"]) == (
        ("xlsx",), ("pptx",), ("epub",), ("odt",))


@pytest.mark.parametrize(("fmt", "build", "main", "kind"), PACKAGES)
@pytest.mark.parametrize("name", ["upload.bin", "notes.txt", "report.docx", "no-extension"])
def test_a_package_is_detected_by_its_content_whatever_its_name(
    fmt: str, build: Callable[[], bytes], main: str, kind: str, name: str
) -> None:
    data = build()
    assert detect_format(data, name) == fmt
    assert parse(data, name).sections


@pytest.mark.parametrize("name", ["sheet.xlsx", "deck.pptx", "book.epub", "letter.odt"])
def test_text_or_nothing_named_like_a_package_is_read_as_text(name: str) -> None:
    assert detect_format(b"just a note\n", name) == "text"
    empty = parse(b"", name)
    assert empty.sections == [] and empty.title == name.split(".")[0]


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (corpus.opendocument_package("application/vnd.oasis.opendocument.spreadsheet", "", kind="spreadsheet"),
         "looks like an OpenDocument spreadsheet"),
        (corpus.opendocument_package("application/vnd.oasis.opendocument.presentation", "", kind="presentation"),
         "looks like an OpenDocument presentation"),
        (corpus.opendocument_package("application/vnd.oasis.opendocument.text-template", "<text:p>x</text:p>"),
         r"looks like an OpenDocument file \(application/vnd\.oasis\.opendocument\.text-template\)"),
        (corpus._zip_bytes({"META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\n", "a/B.class": b"\xca\xfe"}),
         "looks like a Java archive"),
        (corpus._zip_bytes({"META-INF/container.xml": b"<container/>"}),
         "looks like an EPUB book without its package document"),
        (corpus._zip_bytes({"notes.txt": b"plain"}), "no document docmill reads inside"),
    ],
)
def test_other_zips_stay_refused_saying_what_they_look_like(data: bytes, what: str) -> None:
    with pytest.raises(UnsupportedFormatError, match=rf"^unsupported format: zip archive \({what}\) \(file\.odt\)$"):
        parse(data, "file.odt")


def test_an_opendocument_package_without_a_mimetype_member_is_odt_only_by_its_name() -> None:
    data = replaced(corpus.orchard_odt(), "mimetype", None)
    assert detect_format(data, "guide.odt") == "odt"
    assert parse(data, "guide.odt").title == "Community Orchard Pruning Guide"
    with pytest.raises(UnsupportedFormatError, match=r"looks like an OpenDocument file \(no mimetype\)"):
        parse(data, "guide.zip")


# --- broken and hostile packages ---------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "build", "main", "kind"), PACKAGES)
def test_a_truncated_package_is_corrupt_not_unknown(fmt: str, build: Callable[[], bytes], main: str,
                                                    kind: str) -> None:
    data = build()
    cut = data[: len(data) // 2]
    assert detect_format(cut, "upload.bin") == fmt
    with pytest.raises(CorruptDocumentError, match=rf"^corrupt {kind}: .+ \(upload\.bin\)$"):
        parse(cut, "upload.bin")
    head = data[:200]  # cut before an OOXML part is named: there, only the file name still says what it was
    with pytest.raises(CorruptDocumentError, match=rf"^corrupt {kind}: "):
        parse(head, f"report.{fmt}")


@pytest.mark.parametrize(("fmt", "build", "main", "kind"), PACKAGES)
def test_broken_xml_is_corrupt_naming_the_part(fmt: str, build: Callable[[], bytes], main: str, kind: str) -> None:
    data = replaced(build(), main, b"<root><unclosed")
    with pytest.raises(CorruptDocumentError, match=rf"^corrupt {kind}: {re.escape(main)}: .+ \(broken\.{fmt}\)$"):
        parse(data, f"broken.{fmt}")


@pytest.mark.parametrize(
    ("build", "missing", "kind"),
    [
        (corpus.fleet_xlsx, "xl/worksheets/sheet2.xml", "XLSX"),
        (corpus.beekeeping_pptx, "ppt/slides/slide2.xml", "PPTX"),
        (corpus.lighthouse_epub, "OEBPS/text/chapter2.xhtml", "EPUB"),
        (corpus.lighthouse_epub, "OEBPS/content.opf", "EPUB"),
        (corpus.orchard_odt, "content.xml", "ODT"),
    ],
)
def test_a_missing_part_is_corrupt_naming_it(build: Callable[[], bytes], missing: str, kind: str) -> None:
    with pytest.raises(CorruptDocumentError, match=rf"^corrupt {kind}: the part {re.escape(missing)} is missing"):
        parse(replaced(build(), missing, None), "gap.bin")


@pytest.mark.parametrize(("fmt", "build", "main", "kind"), PACKAGES)
def test_a_declared_zip_bomb_is_refused_before_anything_is_read(fmt: str, build: Callable[[], bytes], main: str,
                                                                kind: str) -> None:
    bomb = corpus.with_declared_size(build(), main, 3_000_000_000)
    with pytest.raises(DocumentTooLargeError, match=rf"^{kind} unzips to 3\.0 GB, over 1 GB: refused as a likely "
                                                    rf"zip bomb \(bomb\.{fmt}\)$"):
        parse(bomb, f"bomb.{fmt}")


def test_a_package_of_too_many_parts_is_refused_before_zipfile_lists_them(monkeypatch: pytest.MonkeyPatch) -> None:
    data = corpus.beekeeping_pptx()
    monkeypatch.setattr(package, "MAX_MEMBERS", 10)
    with pytest.raises(DocumentTooLargeError, match=r"holds \d+ parts, over 10"):
        parse(data, "deck.pptx")


def test_a_document_type_declaration_is_refused_in_office_parts() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><x>&b;</x>'
    for data, kind in ((replaced(corpus.orchard_odt(), "content.xml", bomb), "ODT"),
                       (replaced(corpus.fleet_xlsx(), "xl/sharedStrings.xml", bomb), "XLSX"),
                       (replaced(corpus.lighthouse_epub(), "OEBPS/content.opf", bomb), "EPUB")):
        with pytest.raises(CorruptDocumentError, match=rf"^corrupt {kind}: a document type declaration"):
            parse(data, "dtd.bin")


# --- XLSX --------------------------------------------------------------------------------------------


def test_xlsx_sheets_in_order_rows_as_cells_and_values_as_excel_shows_them() -> None:
    document = parse(corpus.fleet_xlsx(), "fleet.xlsx")
    assert document.title == "Bicycle Fleet Register"
    assert document.mime == xlsx.MIME
    assert document.metadata == {"sheets": ["Fleet", "Tyre pressures"], "author": "Courier Depot"}
    assert texts(document) == [
        (("Fleet",), "Bike | Model | Bought | Km ridden | Needs service\n"
                     "B-101 | Cargo trike | 2023-04-17 | 1840 | TRUE\n"
                     "B-102 | City bike | 2022-09-03 | 5230.5 | FALSE\n"
                     "B-103 | Cargo trike | 2024-02-29 08:30:00 | 0.3 | FALSE\n"  # 0.1 + 0.2, to 15 digits
                     " |  |  | Cargo trikes carry up to 150 kg of parcels"),  # D7: columns kept, empty rows not
        (("Tyre pressures",), "Model | Front bar | Rear bar\nCargo trike | 2.8 | 3.2\nCity bike | 3.5 | 4"),
    ]
    assert document.links == ["https://example.org/cargo-trike-tyres"]
    assert b"<sst" in member(corpus.fleet_xlsx(), "xl/sharedStrings.xml")  # the strings were shared


def test_xlsx_sheet_order_comes_from_the_workbook_not_the_part_names() -> None:
    data = corpus.fleet_xlsx()
    workbook = member(data, "xl/workbook.xml")
    fleet, tyres = re.findall(rb"<sheet [^>]*/>", workbook)
    data = replaced(data, "xl/workbook.xml", workbook.replace(fleet, b"\0").replace(tyres, fleet).replace(b"\0", tyres))
    assert [section.heading_path for section in parse(data, "fleet.xlsx").sections] == [("Tyre pressures",),
                                                                                        ("Fleet",)]


def test_xlsx_cell_types_rich_shared_strings_and_far_cells() -> None:
    strings = (f'<sst xmlns="{SPREADSHEET_NS}" uniqueCount="2"><si><r><t>Rich </t></r><r><rPr><b/></rPr><t>text'
               "</t></r><rPh><t>phonetic guide</t></rPh></si><si><t>two\nlines</t></si></sst>").encode()
    sheet = (
        f'<worksheet xmlns="{SPREADSHEET_NS}"><dimension ref="B1:XFD3"/><sheetData>'
        '<row r="1"><c r="B1" t="s"><v>0</v></c><c r="C1" t="s"><v>1</v></c><c r="D1" t="b"><v>0</v></c>'
        '<c r="E1" t="e"><v>#DIV/0!</v></c></row>'
        '<row r="2"><c r="B2"><v>1.5E-3</v></c><c r="C2" t="str"><f>UPPER(A1)</f><v>FORMULA TEXT</v></c>'
        '<c r="E2" t="inlineStr"><is><r><t>in</t></r><r><t>line</t></r></is></c></row>'
        '<row r="3"><c r="XFD3"><v>7</v></c></row>'
        '<row r="4"><c r="B4"/><c r="C4" t="s"><v>1</v></c></row>'
        "</sheetData></worksheet>"
    ).encode()
    data = corpus.fleet_xlsx()
    for part, payload in (("xl/sharedStrings.xml", strings), ("xl/worksheets/sheet1.xml", sheet),
                          ("xl/worksheets/sheet2.xml", f'<worksheet xmlns="{SPREADSHEET_NS}"/>'.encode())):
        data = replaced(data, part, payload)
    document = parse(data, "types.xlsx")
    assert document.metadata["sheets"] == ["Fleet", "Tyre pressures"]  # an empty sheet is listed, not written
    assert len(document.sections) == 1
    lines = document.sections[0].text.splitlines()
    assert lines == [
        "Rich text | two lines | FALSE | #DIV/0!",  # the used range starts at B: no empty column A
        "0.0015 | FORMULA TEXT |  | inline",  # a formula gives its cached value
        " | " * 20 + "7",  # a far cell is written after at most 20 empty ones
        " | two lines",
    ]


def test_xlsx_dates_follow_the_workbooks_date_system() -> None:
    import datetime as dt

    import openpyxl
    from openpyxl.utils.datetime import CALENDAR_MAC_1904

    workbook = openpyxl.Workbook()
    workbook.epoch = CALENDAR_MAC_1904
    workbook.active.append([dt.date(2021, 3, 4), dt.time(6, 7, 8)])
    workbook.active["A1"].number_format = "d mmm yyyy"
    workbook.active["B1"].number_format = "[h]:mm:ss"
    buffer = io.BytesIO()
    workbook.save(buffer)
    assert b'date1904="1"' in member(buffer.getvalue(), "xl/workbook.xml")
    assert parse(buffer.getvalue(), "mac.xlsx").sections[0].text == "2021-03-04 | 06:07:08"


def test_xlsx_a_shared_string_index_out_of_range_is_corrupt() -> None:
    data = corpus.fleet_xlsx()
    sheet = member(data, "xl/worksheets/sheet1.xml").replace(b"<v>0</v>", b"<v>999</v>", 1)
    with pytest.raises(CorruptDocumentError, match=r"^corrupt XLSX: cell A1 of sheet Fleet refers to shared string "
                                                   r"'999', of \d+ \(bad\.xlsx\)$"):
        parse(replaced(data, "xl/worksheets/sheet1.xml", sheet), "bad.xlsx")


def test_xlsx_a_shared_strings_table_over_the_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    data = corpus.fleet_xlsx()
    monkeypatch.setattr(xlsx, "MAX_SHARED_STRINGS", 5)
    # Refused at what the table declares, and, when it declares nothing, at the first string over the cap.
    with pytest.raises(DocumentTooLargeError, match=r"shared strings table of 1\d strings, over 5"):
        parse(data, "many.xlsx")
    undeclared = re.sub(rb' (unique)?[cC]ount="\d+"', b"", member(data, "xl/sharedStrings.xml"))
    with pytest.raises(DocumentTooLargeError, match=r"shared strings table of 6 strings, over 5"):
        parse(replaced(data, "xl/sharedStrings.xml", undeclared), "many.xlsx")


def test_xlsx_a_big_sheet_is_streamed_in_sections_of_bounded_memory() -> None:
    rows = 50_000
    data = corpus.big_sheet_xlsx(rows)
    tracemalloc.start()
    try:
        document = parse(data, "readings.xlsx")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    text_chars = sum(len(section.text) for section in document.sections)
    assert len(document.sections) == rows // 50  # ROWS_PER_SECTION rows each, all under the sheet's name
    assert {section.heading_path for section in document.sections} == {("Readings",)}
    assert document.sections[0].text.splitlines()[:2] == ["1 | east | TRUE", "2 | south | TRUE"]
    assert document.sections[-1].text.splitlines()[-1] == f"{rows} | {['north', 'east', 'south'][rows % 3]} | TRUE"
    # The sheet's XML is ~5 MB and a tree of it ~100 MB; what is held beyond the text read is small.
    assert peak < 2 * text_chars + 1_000_000, (peak, text_chars)


# --- PPTX --------------------------------------------------------------------------------------------


def test_pptx_slides_in_order_with_titles_bodies_tables_and_notes() -> None:
    document = parse(corpus.beekeeping_pptx(), "club.pptx")
    assert document.title == "Beekeeping Club Quarterly Review"
    assert document.metadata == {"slides": 3, "author": "Apiary Committee"}
    assert texts(document) == [
        (("Hive health",), "Varroa mite counts dropped below three mites per hundred bees\n"
                           "Two colonies were requeened in May\n"
                           "Notes: Remind members about the honey extraction day on 14 September"),
        (("Honey harvest",), "Apiary | Hives | Honey kg\nOrchard | 6 | 84\nHeath | 4 | 51"),
        (("Slide 3",), "Swarm calls go to the club phone, answered by the duty beekeeper"),
    ]
    assert document.links == ["https://example.org/requeening"]


def test_pptx_order_comes_from_the_slide_list_and_footers_and_fallbacks_are_left_out() -> None:
    data = corpus.beekeeping_pptx()
    presentation = member(data, "ppt/presentation.xml")
    ids = re.findall(rb"<p:sldId [^>]*/>", presentation)
    presentation = presentation.replace(b"".join(ids), b"".join(reversed(ids)))
    footer = (b'<p:sp><p:nvSpPr><p:cNvPr id="20" name="Footer"/><p:cNvSpPr/><p:nvPr><p:ph type="ftr" idx="11"/>'
              b"</p:nvPr></p:nvSpPr><p:spPr/><p:txBody><a:bodyPr/><a:p><a:r><a:t>Club confidential</a:t></a:r></a:p>"
              b"</p:txBody></p:sp>")
    choice = (b'<p:sp><p:nvSpPr><p:cNvPr id="21" name="New"/><p:cNvSpPr/><p:nvPr/></p:nvSpPr><p:spPr/><p:txBody>'
              b'<a:bodyPr/><a:p><a:r><a:t>Chosen text</a:t></a:r><a:br/><a:fld id="{1}" type="slidenum"><a:t>2</a:t>'
              b"</a:fld></a:p></p:txBody></p:sp>")
    fallback = choice.replace(b"Chosen text", b"Fallback text").replace(b'id="21"', b'id="22"')
    extra = (footer + b'<mc:AlternateContent xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006">'
             b'<mc:Choice Requires="p14">' + choice + b"</mc:Choice><mc:Fallback>" + fallback
             + b"</mc:Fallback></mc:AlternateContent></p:spTree>")
    slide = member(data, "ppt/slides/slide2.xml").replace(b"</p:spTree>", extra)
    document = parse(replaced(replaced(data, "ppt/presentation.xml", presentation), "ppt/slides/slide2.xml", slide),
                     "club.pptx")
    assert [section.heading_path for section in document.sections] == [("Slide 1",), ("Honey harvest",),
                                                                       ("Hive health",)]
    assert document.sections[1].text.splitlines()[-2:] == ["Chosen text", "2"]


def test_pptx_merged_table_cells_are_written_once() -> None:
    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[6])
    table = slide.shapes.add_table(2, 3, Inches(1), Inches(1), Inches(6), Inches(2)).table
    table.cell(0, 0).merge(table.cell(0, 1))
    table.cell(0, 0).text = "wide"
    table.cell(0, 2).text = "right"
    for column, text in enumerate("xyz"):
        table.cell(1, column).text = text
    buffer = io.BytesIO()
    deck.save(buffer)
    assert parse(buffer.getvalue(), "merged.pptx").sections[0].text == "wide | right\nx | y | z"


# --- EPUB --------------------------------------------------------------------------------------------


def test_epub_spine_documents_in_order_with_their_headings() -> None:
    document = parse(corpus.lighthouse_epub(), "almanac.epub")
    assert document.title == "The Lighthouse Keeper's Almanac"
    assert document.mime == epub.MIME
    assert document.metadata == {"documents": 2, "author": "Harbour Trust", "lang": "en"}
    assert texts(document) == [
        (("Lamp maintenance",), "Trim the wick of the Fresnel lamp every evening at dusk, and polish the brass "
                                "before dawn."),
        (("Lamp maintenance", "Spare parts"), "Keep two spare mantles in the watch room."),
        (("Fog signals",), "Sound the fog horn twice every minute when visibility drops below one nautical mile. "
                           "See the signal table.\nVisibility | Signal\nunder 1 nm | horn"),
    ]
    # Links out of the book are kept; the links between its own files name no document of the source.
    assert document.links == ["https://example.org/fog-signals"]


def test_epub_title_falls_back_to_the_file_stem_and_an_old_opf_doctype_is_read() -> None:
    data = corpus.lighthouse_epub()
    opf = member(data, "OEBPS/content.opf")
    opf = re.sub(rb"<dc:title>.*?</dc:title>", b"", opf).replace(
        b"<package", b'<!DOCTYPE package PUBLIC "+//ISBN 0-9673008-1-9//DTD OEB 1.2 Package//EN" '
                     b'"http://openebook.org/dtds/oeb-1.2/oebpkg12.dtd"><package', 1)
    document = parse(replaced(data, "OEBPS/content.opf", opf), "shelf/almanac.epub")
    assert document.title == "almanac"
    assert len(document.sections) == 3


def test_epub_with_encrypted_text_is_corrupt_but_obfuscated_fonts_are_fine() -> None:
    def encryption(algorithm: str, uri: str) -> bytes:
        return ('<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
                'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>'
                f'<enc:EncryptionMethod Algorithm="{algorithm}"/><enc:CipherData>'
                f'<enc:CipherReference URI="{uri}"/></enc:CipherData></enc:EncryptedData></encryption>').encode()

    files = {
        "OEBPS/content.opf": member(corpus.lighthouse_epub(), "OEBPS/content.opf"),
        **{f"OEBPS/{href}": member(corpus.lighthouse_epub(), f"OEBPS/{href}")
           for href, _, _ in corpus.LIGHTHOUSE_CHAPTERS},
    }
    fonts = corpus.epub_package({**files, "META-INF/encryption.xml": encryption(
        "http://www.idpf.org/2008/embedding", "OEBPS/fonts/serif.otf")})
    assert len(parse(fonts, "fonts.epub").sections) == 3
    drm = corpus.epub_package({**files, "META-INF/encryption.xml": encryption(
        "http://www.w3.org/2001/04/xmlenc#aes128-cbc", "OEBPS/text/chapter%201.xhtml")})
    with pytest.raises(CorruptDocumentError, match=r"^corrupt EPUB: OEBPS/text/chapter 1\.xhtml is encrypted \(DRM\)"):
        parse(drm, "drm.epub")


def test_epub_a_chapter_too_large_to_parse_whole_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(epub, "MAX_DOCUMENT_BYTES", 200)
    with pytest.raises(DocumentTooLargeError, match=r"EPUB part OEBPS/text/chapter 1\.xhtml unzips to"):
        parse(corpus.lighthouse_epub(), "big.epub")


# --- ODT ---------------------------------------------------------------------------------------------


def test_odt_headings_lists_tables_in_order_without_comments_changes_notes_or_frames() -> None:
    document = parse(corpus.orchard_odt(), "orchard.odt")
    assert document.title == "Community Orchard Pruning Guide"
    assert document.metadata == {"author": "Orchard Volunteers"}
    assert document.links == ["https://example.org/dormancy"]  # not the link to a heading of its own
    assert texts(document) == [
        (("Winter pruning",), "Prune the apple trees in late winter while the buds are still dormant."),
        (("Winter pruning", "Tools"), "- Bypass secateurs\n- Pruning saw for   thick branches\nTree | Month\n"
                                      "Pear | February"),
        (("Summer care",), "Thin the fruitlets to one per cluster\tin June."),
    ]
    text = "\n".join(section.text for section in document.sections)
    for left_out in ("Check this date", "Prune in summer", "A footnote", "Text box words"):
        assert left_out not in text


def test_odt_merged_repeated_and_nested_table_cells_and_the_title_fallbacks() -> None:
    body = (
        "<text:p>Intro</text:p><table:table><table:table-row>"
        '<table:table-cell table:number-columns-spanned="2"><text:p>wide</text:p></table:table-cell>'
        "<table:covered-table-cell><text:p>hidden</text:p></table:covered-table-cell>"
        "<table:table-cell><table:table><table:table-row><table:table-cell><text:p>nested</text:p></table:table-cell>"
        "</table:table-row></table:table><text:p>outer</text:p></table:table-cell></table:table-row>"
        '<table:table-row table:number-rows-repeated="1000"><table:table-cell table:number-columns-repeated="1000"/>'
        "</table:table-row></table:table>"
        '<text:section><text:h text:outline-level="3">Deep <text:span>heading</text:span></text:h>'
        "<text:p>In a section</text:p></text:section>"
    )
    untitled = parse(corpus.opendocument_package(ODT_MIMETYPE, body), "notes/minutes.odt")
    assert texts(untitled) == [((), "Intro\nwide | outer"), (("Deep heading",), "In a section")]
    assert untitled.title == "Deep heading"  # no title in meta.xml: the first heading
    plain = parse(corpus.opendocument_package(ODT_MIMETYPE, "<text:p>only text</text:p>"), "notes/minutes.odt")
    assert plain.title == "minutes"


def test_odt_that_is_password_protected_is_corrupt_saying_so() -> None:
    data = corpus.orchard_odt()
    manifest = member(data, "META-INF/manifest.xml").replace(
        b'manifest:full-path="content.xml" manifest:media-type="text/xml"/>',
        b'manifest:full-path="content.xml" manifest:media-type="text/xml"><manifest:encryption-data '
        b'manifest:checksum-type="SHA1/1K" manifest:checksum="x"/></manifest:file-entry>')
    with pytest.raises(CorruptDocumentError, match=r"^corrupt ODT: content\.xml is encrypted \(password-protected\)"):
        parse(replaced(data, "META-INF/manifest.xml", manifest), "secret.odt")


def test_an_epub_written_by_ebooklib_reads_its_chapters_once_each(tmp_path: Path) -> None:
    book = epub_writer.EpubBook()
    book.set_identifier("harbour-1")
    book.set_title("Harbour book")
    book.set_language("en")
    chapters = [("Tides", "High tide comes twice a day at the harbour."), ("Knots", "A bowline makes a fixed loop.")]
    items = []
    for n, (title, text) in enumerate(chapters, 1):
        item = epub_writer.EpubHtml(title=title, file_name=f"c{n}.xhtml", lang="en")
        item.content = f"<h1>{title}</h1><p>{text}</p>"
        book.add_item(item)
        items.append(item)
    book.toc = tuple(items)
    book.add_item(epub_writer.EpubNcx())
    book.add_item(epub_writer.EpubNav())
    book.spine = ["nav", *items]  # the table of contents comes first, as ebooklib's own examples do
    epub_writer.write_epub(str(tmp_path / "harbour.epub"), book)
    document = parse((tmp_path / "harbour.epub").read_bytes(), "harbour.epub")
    assert document.title == "Harbour book" and document.mime == "application/epub+zip"
    assert [(s.heading_path, s.text) for s in document.sections] == [(("Tides",), chapters[0][1]),
                                                                      (("Knots",), chapters[1][1])]


def test_an_odt_written_by_docutils_reads_headings_inside_sections_and_table_rows(tmp_path: Path) -> None:
    source = ("Lamps\n=====\n\nThe lamp turns once every ten seconds.\n\nFog signals\n-----------\n\n"
              "A horn sounds twice a minute in fog.\n\n+--------+--------+\n| Tower  | Height |\n"
              "+========+========+\n| North  | 31 m   |\n+--------+--------+\n")
    odt = publish_string(source, writer="odt", settings_overrides={"report_level": 5})
    document = parse(odt, "lighthouse.odt")
    assert document.mime == ODT_MIMETYPE
    text = "\n".join(s.text for s in document.sections)
    assert "The lamp turns once every ten seconds." in text
    fog = next(s for s in document.sections if s.heading_path and s.heading_path[-1] == "Fog signals")
    assert fog.text == "A horn sounds twice a minute in fog.\nTower | Height\nNorth | 31 m"


def strict_open_xml(data: bytes) -> bytes:
    """The package as Word saves a "Strict Open XML" file: the same parts under ISO 29500 Strict URIs
    (http://purl.oclc.org/ooxml/...) for elements, attributes and relationship types; OPC's own stay."""
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            payload = source.read(info.filename)
            if info.filename.endswith((".xml", ".rels")):
                payload = re.sub(rb"http://schemas\.openxmlformats\.org/(?!package/)(\w+)/2006/([\w/]+)",
                                 rb"http://purl.oclc.org/ooxml/\1/\2", payload)
            target.writestr(info, payload)
    return buffer.getvalue()


@pytest.mark.parametrize(("build", "name"), [(corpus.autoscaling_docx, "runbook.docx"),
                                             (corpus.fleet_xlsx, "fleet.xlsx"), (corpus.beekeeping_pptx, "club.pptx")])
def test_strict_open_xml_reads_as_the_transitional_file_does(build: Callable[[], bytes], name: str) -> None:
    transitional, strict = parse(build(), name), parse(strict_open_xml(build()), name)
    assert b"purl.oclc.org/ooxml" in member(strict_open_xml(build()), "_rels/.rels")
    assert strict.sections and texts(strict) == texts(transitional)
    assert (strict.title, strict.links) == (transitional.title, transitional.links)
