"""CSV/TSV and JSON/JSONL: one readable `key: value; key: value` line per row or record."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

from docmill.errors import CorruptDocumentError
from docmill.models import ParsedDocument, Section
from docmill.parsers.detect import extension, file_stem
from docmill.parsers.text import decode_text, normalize_newlines, one_line

CSV_MIME = "text/csv"
TSV_MIME = "text/tab-separated-values"
JSON_MIME = "application/json"
JSONL_MIME = "application/x-ndjson"
# Rows (or records, or lines) per section, so a big table does not become one giant section.
ROWS_PER_SECTION = 50

_SNIFF_CHARS = 64 * 1024
# A long text cell (an article body, a log message) is data, not corruption; the csv module's 128 KB
# default refuses it. The file itself is already bounded by max_file_size.
csv.field_size_limit(2**31 - 1)
_DELIMITERS = ",;\t|"
_JSONL_EXTENSIONS = ("jsonl", "ndjson")


def parse_csv(data: bytes, name: str) -> ParsedDocument:
    """Parse CSV/TSV: the first row is the header, each row becomes `header: value; …`."""
    text, encoding = decode_text(data)
    text = normalize_newlines(text)
    is_tsv = extension(name) == "tsv"
    # A TSV says its delimiter in its name; sniffing it could pick commas inside the values instead.
    dialect = csv.get_dialect("excel-tab") if is_tsv else _sniff_dialect(text)

    lines: list[str] = []
    header: list[str] = []
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if not header:
                header = [one_line(cell) or f"column_{i + 1}" for i, cell in enumerate(row)]
                continue
            lines.append(_render_row(header, row))
    except csv.Error as exc:
        raise CorruptDocumentError(f"corrupt CSV: line {reader.line_num}: {exc} ({name})") from exc

    return ParsedDocument(
        title=file_stem(name),
        sections=_sections(lines),
        mime=TSV_MIME if is_tsv else CSV_MIME,
        metadata={
            "rows": len(lines),
            "columns": header,
            "delimiter": dialect.delimiter,
            "encoding": encoding,
        },
    )


def parse_json(data: bytes, name: str) -> ParsedDocument:
    """Parse JSON or JSON Lines into flattened `a.b: value` lines; invalid JSON is CorruptDocumentError."""
    text, encoding = decode_text(data)
    if extension(name) in _JSONL_EXTENSIONS:
        value, mime = _json_lines(text, name), JSONL_MIME
    else:
        value, mime = load_json(text, name)
    metadata: dict[str, Any] = {"encoding": encoding}
    if isinstance(value, list):
        # A list of records: one line per record.
        lines = [render_record(record) for record in value]
        metadata["records"] = len(value)
    elif isinstance(value, dict):
        # A single object: one line per leaf value.
        lines = [f"{key}: {val}" for key, val in flatten(value)]
        metadata["keys"] = [str(key) for key in value][:ROWS_PER_SECTION]
    else:
        lines = [_scalar(value)]
    return ParsedDocument(
        title=file_stem(name),
        sections=_sections(line for line in lines if line),
        mime=mime,
        metadata=metadata,
    )


def load_json(text: str, name: str) -> tuple[Any, str]:
    """(value, mime) of a .json file; one that is really JSON Lines is read as such."""
    try:
        return json.loads(text), JSON_MIME
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and "\n" in text.strip():
            try:
                return _json_lines(text, name), JSONL_MIME
            except CorruptDocumentError:
                pass  # not JSON Lines either: report the error of the file as a whole
        raise CorruptDocumentError(
            f"invalid JSON: line {exc.lineno} column {exc.colno}: {exc.msg} ({name})"
        ) from exc
    except RecursionError as exc:
        raise CorruptDocumentError(f"invalid JSON: nested too deeply ({name})") from exc


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, rendered value) pairs of a nested value; lists of scalars are joined with ', '."""
    if isinstance(value, dict):
        if not value and prefix:
            yield prefix, "{}"
        for key, item in value.items():
            yield from flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        if all(not isinstance(item, dict | list) for item in value):
            yield prefix, ", ".join(_scalar(item) for item in value) if value else "[]"
        else:
            for index, item in enumerate(value):
                yield from flatten(item, f"{prefix}.{index}" if prefix else str(index))
    else:
        yield prefix, _scalar(value)


def render_record(record: Any) -> str:
    """One record on one line: `key: value; key: value` (a scalar record is just its value)."""
    if isinstance(record, dict | list):
        return "; ".join(f"{key}: {val}" if key else val for key, val in flatten(record))
    return _scalar(record)


def _json_lines(text: str, name: str) -> list[Any]:
    """Records of a JSON Lines file; a bad line is an error naming its line number."""
    records: list[Any] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise CorruptDocumentError(
                f"invalid JSON: line {number} column {exc.colno}: {exc.msg} ({name})"
            ) from exc
        except RecursionError as exc:
            raise CorruptDocumentError(f"invalid JSON: line {number}: nested too deeply ({name})") from exc
    return records


def _scalar(value: Any) -> str:
    """A JSON scalar as a reader would write it; long strings are kept whole, on one line."""
    if isinstance(value, str):
        return one_line(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)


def _render_row(header: list[str], row: list[str]) -> str:
    """`header: value` pairs of the non-empty cells; cells beyond the header get positional names."""
    pairs = []
    for index, cell in enumerate(row):
        cell = one_line(cell)
        if cell:
            key = header[index] if index < len(header) else f"column_{index + 1}"
            pairs.append(f"{key}: {cell}")
    return "; ".join(pairs)


def _sniff_dialect(text: str) -> type[csv.Dialect] | csv.Dialect:
    """The dialect csv.Sniffer sees in the first lines, or plain comma-separated when it cannot tell."""
    sample = text[:_SNIFF_CHARS]
    if len(text) > len(sample) and "\n" in sample:
        sample = sample[: sample.rindex("\n")]  # a cut line would mislead the sniffer
    try:
        return csv.Sniffer().sniff(sample, delimiters=_DELIMITERS)
    except csv.Error:
        return csv.get_dialect("excel")


def _sections(lines: Iterable[str]) -> list[Section]:
    """Group lines into sections of at most ROWS_PER_SECTION lines."""
    lines = list(lines)
    return [
        Section(text="\n".join(lines[start : start + ROWS_PER_SECTION]))
        for start in range(0, len(lines), ROWS_PER_SECTION)
    ]
