"""XLSX: each worksheet in workbook order under its name, its rows as `a | b | c` lines, read as a stream.

Cells read as Excel shows the common types: shared and inline strings, numbers (to the 15 significant
digits Excel keeps), booleans as TRUE/FALSE, errors as written, and dates and times when the cell's
number format is one. A formula gives its cached value. Charts, comments, images and other number
formats (currencies, percentages) are left out; hidden sheets are read like the others.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Any, NoReturn

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
    number,
    ooxml_core,
    ooxml_main,
    read_package,
    target_of,
    targets_by_id,
)
from docmill.parsers.tabular import ROWS_PER_SECTION
from docmill.parsers.text import SectionWriter, one_line

MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

#: Shared strings are looked up by index, so all of them stay in memory; real workbooks hold up to a
#: few hundred thousand distinct strings, and a table of tens of millions would take gigabytes.
MAX_SHARED_STRINGS = 2_000_000
#: Sheets in one workbook; every one is a part, read once.
MAX_SHEETS = 10_000
# Excel allows 64,000 cell formats; a styles part of millions would only fill memory.
_MAX_CELL_FORMATS = 100_000
# Empty cells between two values keep the columns of a table aligned; a longer run (a second table far
# to the right, or one far cell per row written to inflate the text) is written as this many.
_MAX_EMPTY_RUN = 20
# Excel keeps 15 significant digits and writes floats with 17 (0.1 + 0.2 as 0.30000000000000004).
_SIGNIFICANT_DIGITS = 15

_M = "http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_WORKSHEET_RELTYPE = OFFICE_RELS + "worksheet"
_SHARED_STRINGS_RELTYPE = OFFICE_RELS + "sharedStrings"
_STYLES_RELTYPE = OFFICE_RELS + "styles"
_DEFAULT_MAIN_PART = "xl/workbook.xml"

# Built-in number formats (ECMA-376 §18.8.30) that show a date or a time; the ids in 27-36 and 50-58
# are the dates of East Asian locales.
_BUILTIN_DATE_FORMATS: dict[int, str] = {
    **dict.fromkeys((14, 15, 16, 17, *range(27, 37), *range(50, 59)), "date"),
    **dict.fromkeys((18, 19, 20, 21, 45, 46, 47), "time"),
    22: "datetime",
}
# Parts of a format code that are not date or time tokens: quoted text, escaped characters, and
# brackets (colours, conditions, locales) other than the elapsed-time ones ([h], [mm], [ss]).
_NOT_DATE_TOKENS = re.compile(r'"[^"]*"|\\.|\[(?![hms]+\])[^\]]*\]', re.IGNORECASE)
_EPOCH_1900 = dt.datetime(1899, 12, 30)
_EPOCH_1904 = dt.datetime(1904, 1, 1)
# Serial day numbers Excel can show as a date: up to 9999-12-31.
_MAX_SERIAL = 2_958_466
_MIDNIGHT = dt.time()
# Excel's last column is XFD: a reference has at most three letters.
_COLUMN_LETTERS = re.compile(r"[A-Za-z]{1,3}")

_WORKBOOK_PLACES: dict[tuple[str, str], str] = {
    ("root", _M + "workbook"): "workbook",
    ("workbook", _M + "workbookPr"): "properties",
    ("workbook", _M + "sheets"): "sheets",
    ("sheets", _M + "sheet"): "sheet",
}
_STYLE_PLACES: dict[tuple[str, str], str] = {
    ("root", _M + "styleSheet"): "styles",
    ("styles", _M + "numFmts"): "formats",
    ("formats", _M + "numFmt"): "format",
    ("styles", _M + "cellXfs"): "cell formats",
    ("cell formats", _M + "xf"): "cell format",
}
# Phonetic guides (rPh) of East Asian text are not placed: their reading is not the text.
_STRING_PLACES: dict[tuple[str, str], str] = {
    ("root", _M + "sst"): "table",
    ("table", _M + "si"): "string",
    ("string", _M + "t"): "t",
    ("string", _M + "r"): "run",
    ("run", _M + "t"): "t",
}
_SHEET_PLACES: dict[tuple[str, str], str] = {
    ("root", _M + "worksheet"): "worksheet",
    ("worksheet", _M + "dimension"): "dimension",
    ("worksheet", _M + "sheetData"): "data",
    ("data", _M + "row"): "row",
    ("row", _M + "c"): "c",
    ("c", _M + "v"): "v",
    ("c", _M + "is"): "inline",
    ("inline", _M + "t"): "t",
    ("inline", _M + "r"): "run",
    ("run", _M + "t"): "t",
}


def parse(data: bytes, name: str) -> ParsedDocument:
    """Parse an XLSX; a package that cannot be read raises CorruptDocumentError."""
    return read_package(data, name, "XLSX", lambda package: _read(package, name), MAX_EXPANDED_BYTES)


def _read(package: Package, name: str) -> ParsedDocument:
    """Read the workbook, its shared strings and date formats, then stream each sheet into sections."""
    main, package_rels = ooxml_main(package, _DEFAULT_MAIN_PART)
    workbook = _WorkbookReader()
    package.stream(main, workbook.start, workbook.end)
    rels = package.relationships(main, {_WORKSHEET_RELTYPE, _SHARED_STRINGS_RELTYPE, _STYLES_RELTYPE})
    strings = _shared_strings(package, target_of(rels, _SHARED_STRINGS_RELTYPE, main))
    date_formats = _date_formats(package, target_of(rels, _STYLES_RELTYPE, main))
    worksheets = targets_by_id(rels, _WORKSHEET_RELTYPE, main)

    writer = SectionWriter()
    names: list[str] = []
    links: list[str] = []
    done: set[str] = set()
    for position, (sheet_name, rel_id) in enumerate(workbook.sheets, start=1):
        part = worksheets.get(rel_id)
        if part is None or part in done:
            continue  # a chart or dialog sheet, or a second entry for a part already read
        done.add(part)
        heading = one_line(sheet_name) or f"Sheet {position}"
        names.append(heading)
        writer.heading(1, heading)
        sheet = _SheetReader(writer, strings, date_formats, workbook.date1904, heading)
        package.stream(part, sheet.start, sheet.end, sheet.data)
        writer.flush()
        links.extend(external_links(package.relationships(part, {HYPERLINK_RELTYPE})))

    core = ooxml_core(package, package_rels)
    metadata: dict[str, Any] = {"sheets": names}
    if core.author:
        metadata["author"] = core.author
    return ParsedDocument(title=core.title or file_stem(name), sections=writer.sections, mime=MIME,
                          metadata=metadata, links=list(dict.fromkeys(links)))


class _WorkbookReader(PlaceReader):
    """The sheets (name, relationship id) in workbook order, and the date system."""

    PLACES = _WORKBOOK_PLACES

    def __init__(self) -> None:
        super().__init__()
        self.sheets: list[tuple[str, str]] = []
        self.date1904 = False

    def opened(self, place: str, parent: str, tag: str, attrs: dict[str, str]) -> None:
        if place == "sheet":
            if len(self.sheets) >= MAX_SHEETS:
                raise DocumentTooLargeError(f"XLSX lists over {MAX_SHEETS:,} sheets")
            self.sheets.append((attrs.get("name", ""), attrs.get(REL_ID, "")))
        elif place == "properties":
            self.date1904 = attrs.get("date1904", "").lower() in ("1", "true")


def _shared_strings(package: Package, part: str) -> list[str]:
    """The shared strings table, each string on one line (empty when the workbook has none)."""
    if part not in package.members:
        return []
    reader = _StringReader()
    package.stream(part, reader.start, reader.end, reader.data)
    return reader.strings


class _StringReader(PlaceReader):
    """Collects the text of each shared string, rich-text runs joined."""

    PLACES = _STRING_PLACES

    def __init__(self) -> None:
        super().__init__()
        self.strings: list[str] = []
        self._text: list[str] = []

    def opened(self, place: str, parent: str, tag: str, attrs: dict[str, str]) -> None:
        if place == "table" and number(attrs.get("uniqueCount"), 0) > MAX_SHARED_STRINGS:
            self._refuse(number(attrs.get("uniqueCount"), 0))  # what it declares: refused before reading
        elif place == "string":
            if len(self.strings) >= MAX_SHARED_STRINGS:
                self._refuse(len(self.strings) + 1)
            self._text = []

    def data(self, text: str) -> None:
        if self.places[-1] == "t":
            self._text.append(text)

    def closed(self, place: str) -> None:
        if place == "string":
            self.strings.append(one_line("".join(self._text)))

    @staticmethod
    def _refuse(count: int) -> NoReturn:
        raise DocumentTooLargeError(f"XLSX shared strings table of {count:,} strings, over {MAX_SHARED_STRINGS:,}")


def _date_formats(package: Package, part: str) -> dict[int, str]:
    """{cell format index: 'date' | 'time' | 'datetime'} for the cell formats that show a date or time."""
    if part not in package.members:
        return {}
    reader = _StyleReader()
    package.stream(part, reader.start, reader.end)
    kinds: dict[int, str] = {}
    for index, format_id in enumerate(reader.cell_formats):
        code = reader.codes.get(format_id)
        kind = _date_kind(code) if code is not None else _BUILTIN_DATE_FORMATS.get(format_id)
        if kind is not None:
            kinds[index] = kind
    return kinds


class _StyleReader(PlaceReader):
    """Custom number format codes by id, and the number format of each cell format, in order."""

    PLACES = _STYLE_PLACES

    def __init__(self) -> None:
        super().__init__()
        self.codes: dict[int, str] = {}
        self.cell_formats: list[int] = []

    def opened(self, place: str, parent: str, tag: str, attrs: dict[str, str]) -> None:
        if place == "format" and len(self.codes) < _MAX_CELL_FORMATS:
            self.codes[number(attrs.get("numFmtId"), -1)] = attrs.get("formatCode", "")
        elif place == "cell format" and len(self.cell_formats) < _MAX_CELL_FORMATS:
            self.cell_formats.append(number(attrs.get("numFmtId"), 0))


def _date_kind(code: str) -> str | None:
    """'date', 'time' or 'datetime' when a number format code shows one, else None. An "m" is a month
    unless it sits with hours or seconds, where Excel reads it as minutes."""
    tokens = _NOT_DATE_TOKENS.sub("", code.split(";", 1)[0]).lower()
    has_time = "h" in tokens or "s" in tokens
    has_date = "d" in tokens or "y" in tokens or ("m" in tokens and not has_time)
    if has_date:
        return "datetime" if has_time else "date"
    return "time" if has_time else None


class _SheetReader(PlaceReader):
    """Writes a worksheet's rows to a SectionWriter as expat reads them, a section per ROWS_PER_SECTION
    rows. Memory holds the cells of one row."""

    PLACES = _SHEET_PLACES

    def __init__(self, writer: SectionWriter, strings: list[str], date_formats: dict[int, str],
                 date1904: bool, sheet: str) -> None:
        super().__init__()
        self._writer = writer
        self._strings = strings
        self._date_formats = date_formats
        self._epoch = _EPOCH_1904 if date1904 else _EPOCH_1900
        self._sheet = sheet
        self._first_column = 0  # of the used range: the columns left of it are empty in every row
        self._rows = 0
        self._row: list[str] = []
        self._last_column = -1  # of the row's last value
        self._column = 0  # of the cell being read
        self._next_column = 0  # of a cell that does not say its own
        self._reference = ""
        self._type = "n"
        self._style = 0
        self._text: list[str] = []

    def opened(self, place: str, parent: str, tag: str, attrs: dict[str, str]) -> None:
        if place == "c":
            self._reference = attrs.get("r", "")
            column = _column_index(self._reference)
            self._column = column if column is not None else self._next_column
            self._next_column = self._column + 1
            self._type = attrs.get("t", "n")
            self._style = number(attrs.get("s"), 0)
            self._text = []
        elif place == "row":
            self._row, self._last_column, self._next_column = [], self._first_column - 1, 0
        elif place == "dimension":
            self._first_column = _column_index(attrs.get("ref", "")) or 0

    def data(self, text: str) -> None:
        if self.places[-1] in ("v", "t"):
            self._text.append(text)

    def closed(self, place: str) -> None:
        if place == "c":
            self._end_cell()
        elif place == "row" and self._row:
            self._writer.add(" | ".join(self._row))
            self._rows += 1
            if self._rows % ROWS_PER_SECTION == 0:
                self._writer.flush()  # the sheet's heading stays: the next section is under it too

    def _end_cell(self) -> None:
        value = self._value("".join(self._text))
        if not value:
            return  # an empty cell is written only as the gap before a later value
        gap = self._column - self._last_column - 1
        if gap > 0:
            self._row.extend([""] * min(gap, _MAX_EMPTY_RUN))
        self._row.append(value)
        self._last_column = max(self._column, self._last_column + 1)

    def _value(self, raw: str) -> str:
        """The text of the cell as Excel shows it."""
        kind = self._type
        if kind == "s":
            index = number(raw.strip(), -1)
            if not 0 <= index < len(self._strings):
                raise ValueError(f"cell {self._reference or '?'} of sheet {self._sheet} refers to shared string "
                                 f"{raw.strip()!r}, of {len(self._strings)}")
            return self._strings[index]
        if kind == "b":
            return "TRUE" if raw.strip() in ("1", "true") else "FALSE"
        if kind in ("inlineStr", "str", "e", "d"):
            return one_line(raw)
        return self._number(raw.strip())

    def _number(self, raw: str) -> str:
        """A number, or the date or time it stands for when its cell format shows one."""
        try:
            value = float(raw)
        except ValueError:
            return one_line(raw)  # not a number after all: shown as written
        kind = self._date_formats.get(self._style)
        if kind is not None and 0 <= value < _MAX_SERIAL:
            return _date_text(value, kind, self._epoch)
        if not any(mark in raw for mark in ".eE"):
            return raw  # an integer: exact as written
        return f"{value:.{_SIGNIFICANT_DIGITS}g}"


def _date_text(serial: float, kind: str, epoch: dt.datetime) -> str:
    """An Excel serial day number as an ISO date, time, or both (a midnight time is left out)."""
    if epoch is _EPOCH_1900 and serial < 60:
        serial += 1  # Excel counts a 29 February 1900 that never was: days before it are off by one
    moment = epoch + dt.timedelta(seconds=round(serial * 86_400))
    if kind == "time":
        return moment.strftime("%H:%M:%S")
    if kind == "date" or moment.time() == _MIDNIGHT:
        return moment.date().isoformat()
    return moment.isoformat(sep=" ")


def _column_index(reference: str) -> int | None:
    """0-based column of a cell reference ("C7" → 2), None when it starts with no column letters."""
    letters = _COLUMN_LETTERS.match(reference)
    return _letters_index(letters.group()) if letters is not None else None


@functools.lru_cache(maxsize=4096)  # every row names the same few columns again
def _letters_index(letters: str) -> int:
    index = 0
    for char in letters.upper():
        index = index * 26 + ord(char) - 64
    return index - 1
