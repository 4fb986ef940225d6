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
import struct
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import docx
import docx.opc.constants
import docx.oxml
import docx.oxml.ns
from docx.text.paragraph import Paragraph
from fpdf import FPDF

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
