"""Real test documents written with real libraries (fpdf2, python-docx), fast and deterministic.

``write_good_corpus`` returns {relative path: a question answered only by that file}, so search tests can
check that the right file comes first. ``write_bad_corpus`` returns {relative path: expected substring of
the error reason}. The other helpers write inputs that must parse fine (empty, damaged UTF-8, large).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
import re
import struct
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import docx
import docx.opc.constants
import docx.oxml
import docx.oxml.ns
import openpyxl
import pptx
from docx.text.paragraph import Paragraph
from fpdf import FPDF
from pptx.util import Inches

# Fixed dates and zip timestamps make every run write byte-identical files (content hashes are stable).
_FIXED_DATE = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
_ZIP_DATE = (2024, 1, 2, 3, 4, 6)

KEYS_MD = """\
---
title: Signing Key Rotation Guide
owner: release-security
---

# Guide

Release artifacts are signed with an offline GPG signing key. This guide explains how the release
team rotates signing keys without breaking verification for users.

## Rotation schedule

Rotate every release signing key every 90 days, and immediately when someone with access to the
hardware token leaves the team. The old key stays published for 30 days so users can verify older
releases.

## Install the new key

### Linux

Import the new public key with `gpg --import release-signing.asc` and check its fingerprint.

```bash
# Not a heading: this line is inside a fenced code block.
gpg --list-keys --with-fingerprint
```

### macOS

Use GPG Suite, then import the key from the keychain menu.

## Before you rotate

Take a fresh database backup first, see [the backup runbook](../ops/backup.md "Backups").
Background reading: [key management](https://example.com/key-management), an ![diagram](img/keys.png),
and <a href="https://example.com/hsm">hardware tokens</a>.
"""

BACKUP_MD = """\
Database Backups
================

Our PostgreSQL databases are backed up nightly at 02:00 UTC with pg_basebackup, and the write-ahead
log is archived continuously so any point of the last days can be restored.

Retention
---------

Nightly database backups are kept for 35 days in the eu-west object storage bucket; the first backup
of each month is kept for one year.

Restore drill
-------------

Once a quarter the on-call engineer restores the latest backup into a scratch cluster and times it.
Rotate keys only after a successful backup, see [key rotation](../guides/keys.md).
"""

SOURDOUGH_MD = """\
# Sourdough starter

Feed the sourdough starter once a day at a 1:5:5 ratio: one part starter, five parts flour and five
parts water by weight. Keep it at about 25 degrees Celsius; it is ready when it doubles in four hours.
"""

VACATION_HTML = """\
<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Vacation Policy</title>
  <style>.banner { color: red; }</style>
  <script>var trackingPixel = "analytics-beacon-id";</script>
</head>
<body>
  <header><div class="logo">Acme Intranet Portal</div></header>
  <nav><a href="/">Home</a> <a href="/benefits.html">Benefits</a> <a href="/careers">Careers menu</a></nav>
  <main>
    <article>
      <h1>Vacation Policy</h1>
      <p>Every full-time employee receives <b>25 days</b> of paid vacation per calendar year,
         on top of public holidays.</p>
      <h2>Carry-over</h2>
      <p>Up to five unused vacation days may be carried over into the first quarter of the next year.</p>
      <ul>
        <li>Request leave in the HR portal</li>
        <li>Your manager approves within three working days</li>
      </ul>
      <h2>Public holidays</h2>
      <table>
        <tr><th>Holiday</th><th>Date</th></tr>
        <tr><td>New Year</td><td>January 1</td></tr>
        <tr><td>Labour Day</td><td>May 1</td></tr>
      </table>
      <h3>Regional holidays</h3>
      <p>See the <a href="holidays/regional.html">regional holiday calendar</a>.</p>
      <noscript>Enable JavaScript for the holiday widget</noscript>
    </article>
  </main>
  <aside>Related: cafeteria menu of the week</aside>
  <footer>Copyright Acme Footer Text 2024</footer>
  <script>document.write("injected script text");</script>
</body>
</html>
"""

HANDBOOK_PAGES: tuple[tuple[str, str], ...] = (
    (
        "Coffee machine descaling",
        "Descale the espresso machine on the third floor every four weeks. Dissolve 30 grams of citric "
        "acid in one litre of water, run it through the steam wand and the group head, then rinse "
        "twice with clean water.",
    ),
    (
        "Fire evacuation",
        "When the fire alarm sounds, leave by the nearest stairwell and gather at the assembly point "
        "next to the old oak tree in the north parking lot. Floor wardens wear yellow vests and count "
        "everyone before the fire brigade arrives.",
    ),
    (
        "Meeting room booking",
        "Meeting rooms are booked in the calendar app for at most two hours at a time. Rooms that stay "
        "empty for fifteen minutes after the start are released automatically.",
    ),
)

TAX_PY = '''\
"""Quarterly estimated tax calendar for freelancers."""

from datetime import date

# Quarterly estimated tax payments are due on April 15, June 15, September 15 and January 15.
ESTIMATED_TAX_DUE_DATES = ((4, 15), (6, 15), (9, 15), (1, 15))


def next_estimated_tax_deadline(today: date) -> date:
    """Return the next quarterly estimated tax payment deadline after ``today``."""
    candidates = []
    for month, day in ESTIMATED_TAX_DUE_DATES:
        year = today.year + 1 if month == 1 else today.year
        candidates.append(date(year, month, day))
    return min(d for d in candidates if d >= today)
'''

IRRIGATION_GO = """\
// Package irrigation controls the greenhouse watering valves.
package irrigation

// StartMoisturePercent is the soil moisture below which the greenhouse irrigation starts watering.
const StartMoisturePercent = 28

// StopMoisturePercent is the soil moisture at which watering stops again.
const StopMoisturePercent = 45

// ShouldWater reports whether the drip lines of a greenhouse bed should open.
func ShouldWater(soilMoisture float64) bool {
	return soilMoisture < StartMoisturePercent
}
"""

AQUARIUM_ROWS: tuple[tuple[str, ...], ...] = (
    ("species", "water_temperature_c", "ph", "minimum_tank_litres"),
    ("Neon tetra", "22-26", "6.0-7.0", "40"),
    ("Betta splendens", "24-28", "6.5-7.5", "20"),
    ("Corydoras catfish", "22-25", "6.0-7.5", "60"),
    ("Goldfish, fancy", "18-22", "7.0-8.0", "80"),
)

TELESCOPES: list[dict[str, object]] = [
    {
        "name": "Great Refractor",
        "aperture_mm": 680,
        "focal_length_mm": 10500,
        "mount": {"type": "equatorial", "drive": "clockwork"},
        "dome": "B",
        "tags": ["historic", "visual"],
    },
    {
        "name": "Sky Survey Reflector",
        "aperture_mm": 1200,
        "focal_length_mm": 4800,
        "mount": {"type": "alt-azimuth", "drive": "servo"},
        "dome": "C",
        "tags": ["imaging"],
    },
]

PIANO_TXT = """\
Lobby piano care

The grand piano in the lobby is tuned twice a year, in April and in October, to concert pitch
A4 = 440 Hz. Keep the humidifier in the piano at 45 percent relative humidity and never place drinks
on the lid.
"""


def write_good_corpus(root: Path) -> dict[str, str]:
    """Write a mixed corpus under ``root``; return {relative path: question only that file answers}."""
    files: dict[str, tuple[bytes, str]] = {
        "guides/keys.md": (
            KEYS_MD.encode(),
            "How often should the release signing keys be rotated?",
        ),
        "ops/backup.md": (
            BACKUP_MD.encode(),
            "How long are nightly database backups retained?",
        ),
        "teams/kitchen/recipes/sourdough.md": (
            SOURDOUGH_MD.encode(),
            "What ratio of flour and water is used to feed the sourdough starter?",
        ),
        "web/vacation.html": (
            VACATION_HTML.encode(),
            "How many days of paid vacation does a full-time employee get?",
        ),
        "facilities/handbook.pdf": (
            handbook_pdf(),
            "Where should staff gather when the fire alarm sounds?",
        ),
        "reports/autoscaling.docx": (
            autoscaling_docx(),
            "At what CPU utilization does the checkout service scale out in Kubernetes?",
        ),
        "src/tax_calendar.py": (
            TAX_PY.encode(),
            "When are quarterly estimated tax payments due?",
        ),
        "src/irrigation/controller.go": (
            IRRIGATION_GO.encode(),
            "At what soil moisture does the greenhouse irrigation start watering?",
        ),
        "data/aquarium.csv": (
            _csv_bytes(AQUARIUM_ROWS),
            "What water temperature does a neon tetra need?",
        ),
        "data/telescopes.json": (
            json.dumps(TELESCOPES, indent=2).encode(),
            "What is the aperture of the Great Refractor telescope?",
        ),
        "notes/piano.txt": (
            PIANO_TXT.encode(),
            "How often is the lobby piano tuned?",
        ),
    }
    for relative, (data, _) in files.items():
        _write(root / relative, data)
    return {relative: question for relative, (_, question) in files.items()}


def write_bad_corpus(root: Path) -> dict[str, str]:
    """Write hostile inputs under ``root``; return {relative path: expected substring of the error}."""
    pdf = handbook_pdf()
    report = autoscaling_docx()
    files: dict[str, tuple[bytes, str]] = {
        "bad/truncated.pdf": (pdf[: len(pdf) // 2], "corrupt PDF"),
        "bad/encrypted.pdf": (encrypted_pdf(), "encrypted"),
        "bad/archive.docx": (_zip_bytes({"notes.txt": b"just a zip, not a document"}), "unsupported format"),
        "bad/truncated.docx": (report[: len(report) // 2], "corrupt DOCX"),
        "bad/random.txt": (random.Random(1234).randbytes(4096), "unsupported format"),
        "bad/picture.md": (png_bytes(), "unsupported format"),
        "bad/broken.json": (b'{"name": "sensor", "readings": [1, 2,}\n', "invalid JSON"),
        "bad/events.jsonl": (b'{"event": "start"}\n{"event": "tick"}\n{"event": \n', "invalid JSON: line 3"),
    }
    for relative, (data, _) in files.items():
        _write(root / relative, data)
    return {relative: reason for relative, (_, reason) in files.items()}


def write_zero_byte(path: Path) -> Path:
    """Write an empty file (a valid document with nothing to index)."""
    return _write(path, b"")


def write_invalid_utf8(path: Path) -> Path:
    """Write UTF-8 text with a few invalid bytes; it must parse, with U+FFFD in their place."""
    good = "Café menu: crème brûlée, naïve tarte — served daily.\n".encode()
    data = good * 3 + b"Broken bytes here: \xff\xfe and \xc3\x28 end.\n" + good * 3
    return _write(path, data)


def write_large_file(path: Path, size_bytes: int) -> Path:
    """Write exactly ``size_bytes`` of plain text, in big blocks so even hundreds of MB are quick."""
    line = b"Filler line for size limits: the quick brown fox jumps over the lazy dog.\n"
    block = line * (1024 * 1024 // len(line))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        remaining = size_bytes
        while remaining > 0:
            piece = block[:remaining]
            handle.write(piece)
            remaining -= len(piece)
    return path


def simple_pdf(pages: Sequence[str], title: str | None = None) -> bytes:
    """A PDF with one page per string (helvetica, plain ASCII)."""
    pdf = FPDF()
    pdf.set_creation_date(_FIXED_DATE)
    if title is not None:
        pdf.set_title(title)
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 7, text, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def handbook_pdf() -> bytes:
    """The 3-page facilities handbook: a different topic on each page."""
    pdf = FPDF()
    pdf.set_creation_date(_FIXED_DATE)
    pdf.set_title("Facilities Handbook")
    for heading, body in HANDBOOK_PAGES:
        pdf.add_page()
        pdf.set_font("helvetica", style="B", size=16)
        pdf.multi_cell(0, 10, heading, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", size=12)
        pdf.multi_cell(0, 7, body, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def encrypted_pdf() -> bytes:
    """A PDF that cannot be opened without its user password."""
    pdf = FPDF()
    pdf.set_creation_date(_FIXED_DATE)
    pdf.set_encryption(owner_password="owner-secret", user_password="user-secret")
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.multi_cell(0, 7, "Salary bands for 2024 are confidential.")
    return bytes(pdf.output())


def autoscaling_docx() -> bytes:
    """A DOCX with a title, nested headings, a table between paragraphs and a hyperlink."""
    document = docx.Document()
    document.core_properties.title = "Kubernetes Autoscaling Review"
    document.core_properties.author = "Platform Team"
    document.add_heading("Kubernetes Autoscaling Review", level=0)
    document.add_paragraph("A review of how our clusters scale under load during the spring sale.")
    document.add_heading("Horizontal Pod Autoscaler", level=1)
    document.add_paragraph(
        "The checkout service scales out when average CPU utilization exceeds 70 percent for two "
        "minutes, and scales in after ten quiet minutes."
    )
    document.add_heading("Thresholds", level=2)
    table = document.add_table(rows=1, cols=4)
    for cell, text in zip(
        table.rows[0].cells, ("Service", "Min replicas", "Max replicas", "CPU target"), strict=True
    ):
        cell.text = text
    for values in (("checkout", "3", "40", "70%"), ("search", "2", "12", "60%")):
        for cell, text in zip(table.add_row().cells, values, strict=True):
            cell.text = text
    document.add_paragraph("Replica limits are reviewed after every incident.")
    document.add_heading("Cluster Autoscaler", level=1)
    paragraph = document.add_paragraph("Node pools grow by at most five nodes at a time; see the ")
    _add_hyperlink(paragraph, "https://kubernetes.io/docs/concepts/cluster-administration/", "upstream docs")
    document.add_paragraph("Spot nodes are drained first when load drops.", style="List Bullet")
    buffer = io.BytesIO()
    document.save(buffer)
    return _normalize_zip(buffer.getvalue())


def png_bytes(width: int = 4, height: int = 4) -> bytes:
    """A real (tiny, grey) PNG image."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        checksum = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + checksum

    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    image = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + image


def _add_hyperlink(paragraph: Paragraph, url: str, text: str) -> None:
    """python-docx has no public API for hyperlinks; build the w:hyperlink run by hand."""
    rel_id = paragraph.part.relate_to(url, docx.opc.constants.RELATIONSHIP_TYPE.HYPERLINK, is_external=True)
    link = docx.oxml.OxmlElement("w:hyperlink")
    link.set(docx.oxml.ns.qn("r:id"), rel_id)
    run = docx.oxml.OxmlElement("w:r")
    run_text = docx.oxml.OxmlElement("w:t")
    run_text.text = text
    run.append(run_text)
    link.append(run)
    paragraph._p.append(link)


def _normalize_zip(data: bytes) -> bytes:
    """Rewrite a zip with fixed timestamps: python-docx stamps members with the current time."""
    source = zipfile.ZipFile(io.BytesIO(data))
    return _zip_bytes({info.filename: source.read(info) for info in source.infolist()})


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, payload in members.items():
            archive.writestr(zipfile.ZipInfo(member, date_time=_ZIP_DATE), payload, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def _csv_bytes(rows: Sequence[Sequence[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- office formats: XLSX, PPTX, EPUB, ODT ---------------------------------------------------------

FLEET_ROWS: tuple[tuple[object, ...], ...] = (
    ("Bike", "Model", "Bought", "Km ridden", "Needs service"),
    ("B-101", "Cargo trike", dt.date(2023, 4, 17), 1840, True),
    ("B-102", "City bike", dt.date(2022, 9, 3), 5230.5, False),
    ("B-103", "Cargo trike", dt.datetime(2024, 2, 29, 8, 30), 0.1 + 0.2, False),
)
TYRE_ROWS: tuple[tuple[object, ...], ...] = (
    ("Model", "Front bar", "Rear bar"),
    ("Cargo trike", 2.8, 3.2),
    ("City bike", 3.5, 4),
)


def fleet_xlsx() -> bytes:
    """An XLSX written by openpyxl and stored as Excel stores it (shared strings): two sheets of a bike
    fleet with dates, numbers and booleans, a far cell, and a title in the core properties."""
    workbook = openpyxl.Workbook()
    fleet = workbook.active
    fleet.title = "Fleet"
    for row in FLEET_ROWS:
        fleet.append(row)
    fleet["D7"] = "Cargo trikes carry up to 150 kg of parcels"
    tyres = workbook.create_sheet("Tyre pressures")
    for row in TYRE_ROWS:
        tyres.append(row)
    tyres["A2"].hyperlink = "https://example.org/cargo-trike-tyres"
    workbook.properties.title = "Bicycle Fleet Register"
    workbook.properties.creator = "Courier Depot"
    workbook.properties.created = workbook.properties.modified = _FIXED_DATE.replace(tzinfo=None)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return with_shared_strings(buffer.getvalue())


_INLINE_STRING = re.compile(rb'<c ([^>]*?)t="inlineStr"([^>]*)><is><t(?: xml:space="preserve")?>(.*?)</t></is></c>')
_SPREADSHEET_NS = b"http://schemas.openxmlformats.org/spreadsheetml/2006/main"


def with_shared_strings(xlsx: bytes) -> bytes:
    """The workbook with its inline strings moved to a shared strings table, as Excel saves them
    (openpyxl writes inline strings only)."""
    source = zipfile.ZipFile(io.BytesIO(xlsx))
    strings: dict[bytes, int] = {}

    def share(match: re.Match[bytes]) -> bytes:
        index = strings.setdefault(match.group(3), len(strings))
        return b'<c %st="s"%s><v>%d</v></c>' % (match.group(1), match.group(2), index)

    members = {info.filename: source.read(info) for info in source.infolist()}
    for member in members:
        if member.startswith("xl/worksheets/"):
            members[member] = _INLINE_STRING.sub(share, members[member])
    items = b"".join(b"<si><t>%s</t></si>" % text for text in strings)
    members["xl/sharedStrings.xml"] = (b'<sst xmlns="%s" count="%d" uniqueCount="%d">%s</sst>'
                                       % (_SPREADSHEET_NS, len(strings), len(strings), items))
    members["xl/_rels/workbook.xml.rels"] = members["xl/_rels/workbook.xml.rels"].replace(
        b"</Relationships>",
        b'<Relationship Id="rIdShared" Target="sharedStrings.xml" Type="http://schemas.openxmlformats.org/'
        b'officeDocument/2006/relationships/sharedStrings"/></Relationships>')
    members["[Content_Types].xml"] = members["[Content_Types].xml"].replace(
        b"</Types>",
        b'<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.'
        b'spreadsheetml.sharedStrings+xml"/></Types>')
    return _zip_bytes(members)


def beekeeping_pptx() -> bytes:
    """A PPTX written by python-pptx: a titled slide with bullets and notes, a table slide, and a slide
    without a title whose text sits in a text box of a group."""
    deck = pptx.Presentation()
    deck.core_properties.title = "Beekeeping Club Quarterly Review"
    deck.core_properties.author = "Apiary Committee"
    deck.core_properties.created = deck.core_properties.modified = _FIXED_DATE.replace(tzinfo=None)
    deck.core_properties.last_printed = _FIXED_DATE.replace(tzinfo=None)
    health = deck.slides.add_slide(deck.slide_layouts[1])
    health.shapes.title.text = "Hive health"
    body = health.placeholders[1].text_frame
    body.text = "Varroa mite counts dropped below three mites per hundred bees"
    body.add_paragraph().text = "Two colonies were requeened in May"
    body.paragraphs[1].runs[0].hyperlink.address = "https://example.org/requeening"
    health.notes_slide.notes_text_frame.text = "Remind members about the honey extraction day on 14 September"
    harvest = deck.slides.add_slide(deck.slide_layouts[5])
    harvest.shapes.title.text = "Honey harvest"
    table = harvest.shapes.add_table(3, 3, Inches(1), Inches(2), Inches(6), Inches(2)).table
    for row, values in enumerate((("Apiary", "Hives", "Honey kg"), ("Orchard", "6", "84"), ("Heath", "4", "51"))):
        for column, text in enumerate(values):
            table.cell(row, column).text = text
    loose = deck.slides.add_slide(deck.slide_layouts[6])  # the blank layout: no title placeholder
    group = loose.shapes.add_group_shape()
    group.shapes.add_textbox(Inches(1), Inches(1), Inches(6), Inches(1)).text_frame.text = (
        "Swarm calls go to the club phone, answered by the duty beekeeper")
    buffer = io.BytesIO()
    deck.save(buffer)
    return _normalize_zip(buffer.getvalue())


_XHTML_PAGE = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE html>
<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops" lang="en">
<head><title>{title}</title><link rel="stylesheet" href="../styles/book.css"/></head>
<body>{body}</body>
</html>
"""
LIGHTHOUSE_CHAPTERS: tuple[tuple[str, str, str], ...] = (
    (
        "text/chapter 1.xhtml",
        "Lamp",
        '<section epub:type="chapter"><header><h1>Lamp maintenance</h1></header>'
        "<p>Trim the wick of the Fresnel lamp every evening at dusk, and polish the brass before dawn.</p>"
        "<h2>Spare parts</h2><p>Keep two spare mantles in the watch room.</p></section>",
    ),
    (
        "text/chapter2.xhtml",
        "Fog",
        "<h1>Fog signals</h1><p>Sound the fog horn twice every minute when visibility drops below one "
        'nautical mile. See the <a href="https://example.org/fog-signals">signal table</a>.</p>'
        "<table><tr><th>Visibility</th><th>Signal</th></tr><tr><td>under 1 nm</td><td>horn</td></tr></table>",
    ),
)


def epub_package(files: dict[str, bytes], opf_path: str = "OEBPS/content.opf") -> bytes:
    """An EPUB container (OCF) around ``files``, the package document at ``opf_path`` among them:
    the mimetype member first and stored, as the specification requires."""
    container = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
        f'<rootfile full-path="{opf_path}" media-type="application/oebps-package+xml"/>'
        "</rootfiles></container>"
    ).encode()
    return _stored_first_zip({"mimetype": b"application/epub+zip", "META-INF/container.xml": container, **files})


def lighthouse_epub() -> bytes:
    """An EPUB 3 book: two XHTML chapters in spine order (one file name with a space, one chapter
    heading inside a <header>), an SVG cover page in the spine, a navigation document outside it."""
    manifest = ['<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>',
                '<item id="cover" href="images/cover.svg" media-type="image/svg+xml"/>',
                '<item id="css" href="styles/book.css" media-type="text/css"/>']
    spine = ['<itemref idref="cover"/>']
    files: dict[str, bytes] = {
        "OEBPS/nav.xhtml": _XHTML_PAGE.format(title="Contents", body='<nav epub:type="toc"><ol><li>'
                                              '<a href="text/chapter2.xhtml">Fog</a></li></ol></nav>').encode(),
        "OEBPS/images/cover.svg": b'<svg xmlns="http://www.w3.org/2000/svg"><text>Cover art words</text></svg>',
        "OEBPS/styles/book.css": b"body { font-family: serif; }",
    }
    for number, (href, title, body) in enumerate(LIGHTHOUSE_CHAPTERS, start=1):
        manifest.append(f'<item id="ch{number}" href="{href.replace(" ", "%20")}" media-type="application/xhtml+xml"/>')
        spine.append(f'<itemref idref="ch{number}"/>')
        files[f"OEBPS/{href}"] = _XHTML_PAGE.format(title=title, body=body).encode()
    files["OEBPS/content.opf"] = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">'
        '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:identifier id="id">urn:uuid:1</dc:identifier>'
        "<dc:title>The Lighthouse Keeper's Almanac</dc:title><dc:creator>Harbour Trust</dc:creator>"
        f"<dc:language>en</dc:language></metadata><manifest>{''.join(manifest)}</manifest>"
        f"<spine>{''.join(spine)}</spine></package>"
    ).encode()
    return epub_package(files)


_ODF_NAMESPACES = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
    'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
    'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
    'xmlns:dc="http://purl.org/dc/elements/1.1/" '
    'xmlns:meta="urn:oasis:names:tc:opendocument:xmlns:meta:1.0" '
    'xmlns:xlink="http://www.w3.org/1999/xlink" '
    'office:version="1.3"'
)
ORCHARD_BODY = (
    '<text:h text:outline-level="1">Winter pruning</text:h>'
    '<text:p>Prune the apple trees in late winter while the buds are still <text:a xlink:type="simple" '
    'xlink:href="https://example.org/dormancy">dormant</text:a>.'
    "<office:annotation><dc:creator>Reviewer</dc:creator><text:p>Check this date</text:p></office:annotation></text:p>"
    '<text:tracked-changes><text:changed-region text:id="c1"><text:deletion><text:p>Prune in summer.</text:p>'
    "</text:deletion></text:changed-region></text:tracked-changes>"
    '<text:h text:outline-level="2">Tools</text:h>'
    '<text:list><text:list-item><text:p><text:a xlink:href="#Winter_pruning">Bypass secateurs</text:a></text:p>'
    "</text:list-item>"
    '<text:list-item><text:p>Pruning saw<text:s/>for<text:s text:c="3"/>thick branches</text:p></text:list-item>'
    "</text:list>"
    "<table:table><table:table-column/><table:table-column/><table:table-row><table:table-cell><text:p>Tree</text:p>"
    "</table:table-cell><table:table-cell><text:p>Month</text:p></table:table-cell></table:table-row>"
    "<table:table-row><table:table-cell><text:p>Pear</text:p></table:table-cell><table:table-cell>"
    "<text:p>February</text:p></table:table-cell></table:table-row></table:table>"
    '<text:h text:outline-level="1">Summer care</text:h>'
    "<text:p>Thin the fruitlets to one per cluster<text:note text:note-class=\"footnote\"><text:note-citation>1"
    "</text:note-citation><text:note-body><text:p>A footnote about thinning.</text:p></text:note-body></text:note>"
    "<text:tab/>in June.</text:p>"
    '<draw:frame draw:name="Box"><draw:text-box><text:p>Text box words</text:p></draw:text-box></draw:frame>'
)


def opendocument_package(mimetype: str, body: str, title: str | None = None, kind: str = "text") -> bytes:
    """An OpenDocument package: the mimetype member first and stored, content.xml with ``body`` inside
    office:``kind``, a meta.xml with ``title``, and the manifest."""
    content = (f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {_ODF_NAMESPACES}>'
               f"<office:automatic-styles/><office:body><office:{kind}>{body}</office:{kind}></office:body>"
               "</office:document-content>").encode()
    title_xml = f"<dc:title>{title}</dc:title>" if title is not None else ""
    meta = (f'<?xml version="1.0" encoding="UTF-8"?><office:document-meta {_ODF_NAMESPACES}><office:meta>'
            f"{title_xml}<meta:initial-creator>Orchard Volunteers</meta:initial-creator>"
            "</office:meta></office:document-meta>").encode()
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.3">'
        f'<manifest:file-entry manifest:full-path="/" manifest:media-type="{mimetype}"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        '<manifest:file-entry manifest:full-path="meta.xml" manifest:media-type="text/xml"/>'
        "</manifest:manifest>"
    ).encode()
    return _stored_first_zip({"mimetype": mimetype.encode(), "content.xml": content, "meta.xml": meta,
                              "META-INF/manifest.xml": manifest})


def orchard_odt() -> bytes:
    """An ODT with outline-level headings, a list, a table, and a comment, a deleted passage (tracked
    change), a footnote and a text box that are not part of the text read."""
    return opendocument_package("application/vnd.oasis.opendocument.text", ORCHARD_BODY,
                                title="Community Orchard Pruning Guide")


def write_office_corpus(root: Path) -> dict[str, str]:
    """Write one XLSX, PPTX, EPUB and ODT under ``root``; return {relative path: a phrase only it holds}."""
    files: dict[str, tuple[bytes, str]] = {
        "sheets/fleet.xlsx": (fleet_xlsx(), "Cargo trikes carry up to 150 kg of parcels"),
        "slides/beekeeping.pptx": (beekeeping_pptx(), "Varroa mite counts dropped below three mites"),
        "books/lighthouse.epub": (lighthouse_epub(), "Trim the wick of the Fresnel lamp every evening"),
        "docs/orchard.odt": (orchard_odt(), "Prune the apple trees in late winter"),
    }
    for relative, (data, _) in files.items():
        _write(root / relative, data)
    return {relative: phrase for relative, (_, phrase) in files.items()}


def with_declared_size(package: bytes, member: str, size: int) -> bytes:
    """The zip with ``member``'s uncompressed size in its directory entry set to ``size`` (< 4 GiB):
    what a zip bomb declares, without the bytes."""
    entry = package.rfind(b"PK\x01\x02", 0, package.rfind(member.encode()))
    return package[: entry + 24] + struct.pack("<I", size) + package[entry + 28 :]


def _stored_first_zip(members: dict[str, bytes]) -> bytes:
    """A zip with fixed timestamps whose first member is stored (uncompressed), the rest deflated."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, (member, payload) in enumerate(members.items()):
            method = zipfile.ZIP_STORED if index == 0 else zipfile.ZIP_DEFLATED
            archive.writestr(zipfile.ZipInfo(member, date_time=_ZIP_DATE), payload, method)
    return buffer.getvalue()


def big_sheet_xlsx(rows: int) -> bytes:
    """A minimal XLSX of one sheet of ``rows`` rows (a number, a shared string, a boolean each): a
    sheet of the size real exports reach, which no parser should hold as a tree."""
    relationships = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    cells = "".join(
        f'<row r="{n}"><c r="A{n}"><v>{n}</v></c><c r="B{n}" t="s"><v>{n % 3}</v></c>'
        f'<c r="C{n}" t="b"><v>1</v></c></row>'
        for n in range(1, rows + 1)
    )
    members = {
        "[Content_Types].xml": (
            b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            b'<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            b'<Default Extension="xml" ContentType="application/xml"/></Types>'),
        "_rels/.rels": (
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{relationships}/officeDocument" Target="xl/workbook.xml"/>'
            "</Relationships>").encode(),
        "xl/workbook.xml": (
            f'<workbook xmlns="{_SPREADSHEET_NS.decode()}" xmlns:r="{relationships}"><sheets>'
            '<sheet name="Readings" sheetId="1" r:id="rId1"/></sheets></workbook>').encode(),
        "xl/_rels/workbook.xml.rels": (
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{relationships}/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId2" Type="{relationships}/sharedStrings" Target="sharedStrings.xml"/>'
            "</Relationships>").encode(),
        "xl/sharedStrings.xml": (
            f'<sst xmlns="{_SPREADSHEET_NS.decode()}"><si><t>north</t></si><si><t>east</t></si>'
            "<si><t>south</t></si></sst>").encode(),
        "xl/worksheets/sheet1.xml": (
            f'<worksheet xmlns="{_SPREADSHEET_NS.decode()}"><sheetData>{cells}</sheetData></worksheet>').encode(),
    }
    return _zip_bytes(members)
