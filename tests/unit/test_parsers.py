"""Behaviour of format detection and of every parser, on real files written by tests/corpus.py."""

from __future__ import annotations

import codecs
import io
import json
import random
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import docx
import pypdfium2
import pytest
from fpdf import FPDF

from docmill.errors import CorruptDocumentError, DocumentTooLargeError, PermanentError, UnsupportedFormatError
from docmill.models import ParsedDocument
from docmill.parsers import (
    EXTENSIONS,
    SUPPORTED_FORMATS,
    TITLE_MAX_CHARS,
    detect_format,
    parse,
    parser_for,
    register,
)
from tests import corpus


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("good")
    return root, corpus.write_good_corpus(root)


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("bad")
    return root, corpus.write_bad_corpus(root)


def parse_file(root: Path, relative: str) -> ParsedDocument:
    return parse((root / relative).read_bytes(), relative)


def full_text(document: ParsedDocument) -> str:
    return "\n".join(section.text for section in document.sections)


def _docx_bytes(build: object) -> bytes:
    document = docx.Document()
    build(document)  # type: ignore[operator]
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


# --- registry and public surface ---------------------------------------------------------------------


def test_every_format_is_registered_and_listed_with_extensions() -> None:
    assert set(SUPPORTED_FORMATS) == {"text", "markdown", "rst", "html", "pdf", "docx", "xlsx", "pptx", "epub", "odt",
                                      "code", "csv", "json", "notebook"}
    assert set(EXTENSIONS) == set(SUPPORTED_FORMATS)
    assert "md" in EXTENSIONS["markdown"] and "jsonl" in EXTENSIONS["json"] and "tsv" in EXTENSIONS["csv"]


def test_registering_a_format_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register("pdf", parser_for("text"))
    assert parser_for("pdf") is not parser_for("text")


# --- the good corpus ---------------------------------------------------------------------------------

ANSWERS = {
    "guides/keys.md": "every 90 days",
    "ops/backup.md": "kept for 35 days",
    "teams/kitchen/recipes/sourdough.md": "1:5:5 ratio",
    "web/vacation.html": "25 days of paid vacation",
    "facilities/handbook.pdf": "old oak tree in the north parking lot",
    "reports/autoscaling.docx": "exceeds 70 percent",
    "src/tax_calendar.py": "April 15, June 15, September 15 and January 15",
    "src/irrigation/controller.go": "StartMoisturePercent = 28",
    "data/aquarium.csv": "species: Neon tetra; water_temperature_c: 22-26",
    "data/telescopes.json": "name: Great Refractor; aperture_mm: 680",
    "notes/piano.txt": "tuned twice a year",
}


def test_good_corpus_has_every_kind_of_file_and_a_question_per_file(
    good: tuple[Path, dict[str, str]],
) -> None:
    root, questions = good
    assert set(questions) == set(ANSWERS)
    assert all(question.endswith("?") for question in questions.values())
    suffixes = {Path(relative).suffix for relative in questions}
    assert {".md", ".html", ".pdf", ".docx", ".py", ".go", ".csv", ".json", ".txt"} <= suffixes
    assert any(relative.count("/") >= 3 for relative in questions)  # a nested folder
    assert all((root / relative).stat().st_size > 0 for relative in questions)


def test_good_corpus_is_deterministic(tmp_path: Path, good: tuple[Path, dict[str, str]]) -> None:
    root, questions = good
    corpus.write_good_corpus(tmp_path)
    for relative in questions:
        assert (tmp_path / relative).read_bytes() == (root / relative).read_bytes(), relative


@pytest.mark.parametrize("relative", sorted(ANSWERS))
def test_every_good_file_parses_and_holds_its_answer(
    good: tuple[Path, dict[str, str]], relative: str
) -> None:
    root, _ = good
    document = parse_file(root, relative)
    assert document.sections, relative
    assert document.title
    text = " ".join(full_text(document).split())
    assert ANSWERS[relative] in text
    # No other file's answer leaks into this one: the topics are distinct.
    assert not [other for other, answer in ANSWERS.items() if other != relative and answer in text]


# --- detection by content ----------------------------------------------------------------------------


def test_pdf_named_txt_is_parsed_as_pdf() -> None:
    data = corpus.handbook_pdf()
    assert detect_format(data, "notes.txt") == "pdf"
    document = parse(data, "notes.txt")
    assert document.mime == "application/pdf"
    assert [section.page for section in document.sections] == [1, 2, 3]


def test_docx_named_bin_is_parsed_as_docx() -> None:
    assert detect_format(corpus.autoscaling_docx(), "upload.bin") == "docx"
    assert parse(corpus.autoscaling_docx(), "upload.bin").title == "Kubernetes Autoscaling Review"


def test_binary_named_txt_is_rejected_with_nul_bytes() -> None:
    with pytest.raises(UnsupportedFormatError, match=r"unsupported format: binary data .*\(blob\.txt\)"):
        parse(random.Random(7).randbytes(2000), "blob.txt")


def test_binary_without_nul_bytes_is_rejected_by_control_character_ratio() -> None:
    data = bytes(byte for byte in random.Random(8).randbytes(4000) if byte)
    with pytest.raises(UnsupportedFormatError, match=r"binary data .*control characters"):
        parse(data, "notes.txt")


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (corpus.png_bytes(), "PNG image"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "JPEG image"),
        (b"GIF89a\x01\x00\x01\x00", "GIF image"),
        (b"\x7fELF\x02\x01\x01\x00", "ELF executable"),
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00", "gzip archive"),
        (b"BZh91AY&SY\x00\x00", "bzip2 archive"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WebP image"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00\x00", "OLE2 compound file"),
    ],
)
def test_known_binary_formats_are_named_in_the_error(data: bytes, what: str) -> None:
    with pytest.raises(UnsupportedFormatError, match=rf"unsupported format: {what}.*\(readme\.md\)"):
        parse(data, "readme.md")


def test_zip_that_is_no_document_docmill_reads_is_unsupported_and_names_what_it_looks_like() -> None:
    spreadsheet = corpus.opendocument_package("application/vnd.oasis.opendocument.spreadsheet", "", kind="spreadsheet")
    with pytest.raises(UnsupportedFormatError, match=r"zip archive \(looks like an OpenDocument spreadsheet\)"):
        parse(spreadsheet, "budget.docx")


def test_extension_decides_among_text_formats() -> None:
    data = b"# Title\n\nbody\n"
    assert detect_format(data, "a.md") == "markdown"
    assert detect_format(data, "a.txt") == "text"
    assert detect_format(data, "a.py") == "code"
    assert detect_format(b"a,b\n1,2\n", "t.csv") == "csv"
    assert detect_format(b"FROM python:3.12\n", "docker/Dockerfile") == "code"
    assert detect_format(b"all:\n\techo hi\n", "Makefile") == "code"


def test_without_a_helpful_extension_the_content_is_sniffed() -> None:
    assert detect_format(b"  <!DOCTYPE html><html><body>x</body></html>", "https://x.test/page") == "html"
    assert detect_format(b"<html><body>x</body></html>", "index") == "html"
    assert detect_format(b'{"a": 1}', "data") == "json"
    assert detect_format(b"[1, 2, 3]", "data.unknown") == "json"
    assert detect_format(b"{not json at all", "data") == "text"
    assert detect_format(b"just words", "notes") == "text"
    # A text file that only claims to be a PDF is read as the text it is.
    assert detect_format(b"not really a pdf\n", "fake.pdf") == "text"


@pytest.mark.parametrize("name", ["empty.txt", "empty.md", "empty.pdf", "empty.docx", "empty.json", "empty"])
def test_empty_files_are_documents_without_sections(tmp_path: Path, name: str) -> None:
    path = corpus.write_zero_byte(tmp_path / name)
    assert path.stat().st_size == 0
    document = parse(path.read_bytes(), name)
    assert document.sections == []
    assert document.title == Path(name).stem


@pytest.mark.parametrize("data", [b"   \n\t\n  ", codecs.BOM_UTF8 + b"\n\n"])
def test_whitespace_only_files_are_documents_without_sections(data: bytes) -> None:
    assert parse(data, "blank.md").sections == []
    assert parse(data, "blank.csv").sections == []


# --- the bad corpus ----------------------------------------------------------------------------------


def test_bad_corpus_covers_the_hostile_inputs(bad: tuple[Path, dict[str, str]]) -> None:
    _, expected = bad
    reasons = set(expected.values())
    assert {"corrupt PDF", "encrypted", "unsupported format", "invalid JSON"} <= reasons
    suffixes = {
        Path(relative).suffix for relative, reason in expected.items() if reason == "unsupported format"
    }
    assert {".docx", ".txt", ".md"} <= suffixes


@pytest.mark.parametrize(
    "relative",
    [
        "bad/truncated.pdf",
        "bad/encrypted.pdf",
        "bad/archive.docx",
        "bad/truncated.docx",
        "bad/random.txt",
        "bad/picture.md",
        "bad/broken.json",
        "bad/events.jsonl",
    ],
)
def test_every_bad_file_fails_with_a_permanent_error_and_its_reason(
    bad: tuple[Path, dict[str, str]], relative: str
) -> None:
    root, expected = bad
    with pytest.raises(PermanentError) as caught:
        parse_file(root, relative)
    assert expected[relative] in str(caught.value)
    assert relative in str(caught.value)  # the message names the file
    assert isinstance(caught.value, UnsupportedFormatError | CorruptDocumentError)


def test_pdfium_reason_is_kept_for_a_truncated_pdf(bad: tuple[Path, dict[str, str]]) -> None:
    root, _ = bad
    with pytest.raises(
        CorruptDocumentError, match=r"^corrupt PDF: Data format error \(bad/truncated\.pdf\)$"
    ):
        parse_file(root, "bad/truncated.pdf")


# --- what every parser returns ------------------------------------------------------------------------


def all_strings(document: ParsedDocument) -> list[str]:
    """Every string a parser hands on: title, section texts and headings, metadata, links."""
    found: list[str] = []

    def collect(value: object) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                collect(key)
                collect(item)
        elif isinstance(value, list | tuple):
            for item in value:
                collect(item)

    collect([document.title, document.metadata, document.links])
    for section in document.sections:
        collect([section.text, section.heading_path])
    return found


def test_lone_surrogates_from_json_escapes_become_replacement_characters() -> None:
    # Valid JSON whose escapes decode to surrogates that pair with nothing: not Unicode text.
    data = b'{"note": "bad \\ud800 here", "\\udc00key": ["x\\udfff", "\\udc00\\ud800"]}'
    document = parse(data, "odd.json")
    assert full_text(document) == "note: bad \ufffd here\n\ufffdkey: x\ufffd, \ufffd\ufffd"
    assert document.metadata["keys"] == ["note", "\ufffdkey"]
    for value in all_strings(document):
        value.encode("utf-8")  # raises on a lone surrogate


def test_a_file_name_with_undecodable_bytes_gives_a_valid_title() -> None:
    # os.listdir turns bytes that are not UTF-8 into lone surrogates (surrogateescape).
    name = b"caf\xe9.txt".decode("utf-8", "surrogateescape")
    assert parse(b"", name).title == "caf\ufffd"
    assert parse(b"[]", name.replace(".txt", ".json")).title == "caf\ufffd"


def test_nul_characters_are_removed_from_everything_parsers_return() -> None:
    # The NUL bytes come after the 8 KB that detection samples, so the file is text.
    data = b"Lobby notes\n" + b"nothing to report\n" * 600 + b"after\x00the\x00 nul\n"
    document = parse(data, "notes.txt")
    assert full_text(document).endswith("nothing to report\nafterthe nul")
    record = parse(b'{"k\\u0000ey": "va\\u0000lue", "tags": ["a\\u0000b"]}', "r.json")
    assert full_text(record) == "key: value\ntags: ab"
    assert record.metadata["keys"] == ["key", "tags"]
    assert not [value for value in all_strings(document) + all_strings(record) if "\x00" in value]


LONG_HEADING = " ".join(f"word{n}" for n in range(600))


def assert_cut_at_a_word(value: str, original: str) -> None:
    assert len(value) <= TITLE_MAX_CHARS and value.endswith("…")
    kept = value.removesuffix("…")
    assert original.startswith(kept) and original[len(kept)] == " "


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("long.md", f"# {LONG_HEADING}\n\nbody text\n".encode()),
        ("long.html", f"<title>{LONG_HEADING}</title><h2>{LONG_HEADING}</h2><p>body text</p>".encode()),
        ("long.docx", _docx_bytes(lambda d: (d.add_heading(LONG_HEADING, 0), d.add_heading(LONG_HEADING, 1),
                                             d.add_paragraph("body text")))),
        ("long.pdf", corpus.simple_pdf(["body text"], title=LONG_HEADING)),
    ],
)
def test_long_titles_and_headings_are_cut_at_a_word_in_every_format(name: str, data: bytes) -> None:
    document = parse(data, name)
    assert document.title is not None
    assert_cut_at_a_word(document.title, LONG_HEADING)
    assert full_text(document) == "body text"
    for heading in document.sections[0].heading_path:
        assert_cut_at_a_word(heading, LONG_HEADING)


def test_a_giant_markdown_heading_is_not_copied_whole_into_every_section() -> None:
    giant = " ".join(f"word{n}" for n in range(40_000))  # a 290 KB heading line
    body = "\n\n".join(f"## Part {n}\n\nText of part {n}." for n in range(50))
    document = parse(f"# {giant}\n\n{body}\n".encode(), "giant.md")
    assert len(document.sections) == 50
    assert all(sum(map(len, section.heading_path)) <= 2 * TITLE_MAX_CHARS for section in document.sections)
    assert document.sections[7].heading_path[1] == "Part 7"
    assert_cut_at_a_word(document.sections[7].heading_path[0], giant)


# --- reStructuredText ------------------------------------------------------------------------------


RST_GUIDE = """\
==================
Lighthouse keeping
==================

Lamps
=====

The lamp turns once every ten seconds.

Fog signals
-----------

A horn sounds twice a minute in fog::

    literal
    -------
    block

----

=====  ======
Tower  Height
=====  ======
North  31 m
=====  ======

Maintenance
===========

Paint the tower every spring.
"""


def test_rst_sections_follow_its_titles_with_levels_in_order_of_first_use() -> None:
    document = parse(RST_GUIDE.encode(), "guide.rst")
    assert (document.title, document.mime) == ("Lighthouse keeping", "text/x-rst")
    assert [(s.heading_path, s.text) for s in document.sections] == [
        (("Lighthouse keeping", "Lamps"), "The lamp turns once every ten seconds."),
        # An indented literal block, a transition and a simple table are text, not titles.
        (("Lighthouse keeping", "Lamps", "Fog signals"), "A horn sounds twice a minute in fog::\n\n    literal\n"
         "    -------\n    block\n\n----\n\n=====  ======\nTower  Height\n=====  ======\nNorth  31 m\n=====  ======"),
        (("Lighthouse keeping", "Maintenance"), "Paint the tower every spring."),
    ]
    assert detect_format(RST_GUIDE.encode(), "guide.rst") == "rst"
    assert parse(b"no titles at all\n\njust text\n", "notes.rst").title == "no titles at all"


# --- Jupyter notebooks ----------------------------------------------------------------------------


TIDES_NOTEBOOK = {
    "nbformat": 4, "nbformat_minor": 5,
    "metadata": {"kernelspec": {"name": "ir", "language": "R", "display_name": "R"}},
    "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Tide tables\n", "\n", "Loading the harbour's data."]},
        {"cell_type": "code", "metadata": {}, "execution_count": 1, "source": ["tides <- read.csv('tides.csv')\n",
                                                                              "head(tides, 1)"],
         "outputs": [{"output_type": "execute_result", "execution_count": 1, "metadata": {},
                      "data": {"text/plain": ["  hour height_m\n", "1    0      1.2"], "text/html": ["<table/>"]}},
                     {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBORw0KGgo="}}]},
        {"cell_type": "markdown", "metadata": {}, "source": "## High tide\n\nHigh tide comes twice a day."},
        {"cell_type": "code", "metadata": {}, "execution_count": 2, "source": "max(tides$height_m)",
         "outputs": [{"output_type": "stream", "name": "stdout", "text": "x" * 5000},
                     {"output_type": "error", "ename": "Error", "evalue": "object 'depth' not found",
                      "traceback": ["\u001b[31mError\u001b[0m"]}]},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "source": "", "outputs": []},
    ],
}


def test_a_notebook_reads_as_markdown_cells_code_and_printed_output() -> None:
    document = parse(json.dumps(TIDES_NOTEBOOK).encode(), "tides.ipynb")
    assert (document.title, document.mime) == ("Tide tables", "application/x-ipynb+json")
    assert document.metadata == {"cells": 5, "language": "R"}
    assert [(s.heading_path, s.text) for s in document.sections] == [
        (("Tide tables",), "Loading the harbour's data.\n\n```R\ntides <- read.csv('tides.csv')\nhead(tides, 1)\n```"
                           "\n\n```output\n  hour height_m\n1    0      1.2\n```"),  # no HTML, no image
        (("Tide tables", "High tide"), "High tide comes twice a day.\n\n```R\nmax(tides$height_m)\n```\n\n"
         f"```output\n{'x' * 2000}…\n```\n\n```output\nError: object 'depth' not found\n```"),
    ]
    assert detect_format(json.dumps(TIDES_NOTEBOOK).encode(), "tides.ipynb") == "notebook"


def test_odd_notebook_metadata_falls_back_to_python() -> None:
    for metadata in ({"language_info": {"name": " "}}, {"kernelspec": {"language": 3}}, [], None):
        notebook = {"cells": [{"cell_type": "code", "source": "1 + 1", "outputs": "not a list"}], "metadata": metadata}
        assert parse(json.dumps(notebook).encode(), "odd.ipynb").sections[0].text == "```python\n1 + 1\n```"


@pytest.mark.parametrize(("data", "reason"), [(b'{"cells": [', "invalid JSON: line 1"),
                                              (b'{"nbformat": 4}', "corrupt notebook: no list of cells")])
def test_a_broken_notebook_is_corrupt_saying_why(data: bytes, reason: str) -> None:
    with pytest.raises(CorruptDocumentError, match=reason):
        parse(data, "broken.ipynb")


# --- text and encodings ------------------------------------------------------------------------------


def test_text_title_is_first_non_empty_line_trimmed() -> None:
    document = parse(b"\n\n   Lobby piano care   \n\nbody\n", "notes/piano.txt")
    assert document.title == "Lobby piano care"
    assert document.sections[0].text == "   Lobby piano care\n\nbody"  # indentation is content
    assert document.sections[0].heading_path == ()
    long_line = "x" * 500
    assert parse(long_line.encode(), "a.txt").title == "x" * 199 + "…"  # no space to cut at


def test_a_man_page_is_titled_by_its_name_line() -> None:
    page = ("GIT-STASH(1)\t\t\tGit Manual\t\t\tGIT-STASH(1)\n\nNAME\n       git-stash - Stash the changes in a "
            "dirty working\n       directory away\n\nSYNOPSIS\n       git stash list\n")
    document = parse(page.encode(), "git-stash.txt")
    assert document.title == "git-stash - Stash the changes in a dirty working"
    assert document.sections[0].text.startswith("GIT-STASH(1)")  # the text itself is unchanged
    assert parse(b"NAME\nthe name field of a form\n", "form.txt").title == "NAME"  # no indented line under it


def test_latin1_text_is_decoded_by_detection() -> None:
    text = "Le café crème était très apprécié à la fête de Noël; la bûche glacée aussi.\n"
    document = parse(text.encode("latin-1"), "menu.txt")
    assert document.sections[0].text == text.strip()
    assert "\ufffd" not in full_text(document)


def test_utf8_bom_is_removed() -> None:
    document = parse(codecs.BOM_UTF8 + "Grüße aus München\n".encode(), "greeting.txt")
    assert document.sections[0].text == "Grüße aus München"
    assert document.title == "Grüße aus München"


def test_utf16_with_bom_is_text_not_binary() -> None:
    document = parse("Hello UTF-16 wörld\n".encode("utf-16"), "wide.txt")
    assert document.sections[0].text == "Hello UTF-16 wörld"


def test_invalid_utf8_is_replaced_never_fatal(tmp_path: Path) -> None:
    path = corpus.write_invalid_utf8(tmp_path / "damaged.txt")
    document = parse(path.read_bytes(), "damaged.txt")
    text = full_text(document)
    assert "\ufffd" in text
    assert "crème brûlée" in text and "Broken bytes here:" in text
    markdown_doc = parse(path.read_bytes(), "damaged.md")
    assert "\ufffd" in full_text(markdown_doc)


def test_windows_line_endings_are_normalized() -> None:
    document = parse(b"first\r\nsecond\rthird\r\n", "crlf.txt")
    assert document.sections[0].text == "first\nsecond\nthird"


def test_large_file_helper_writes_exact_size_of_parseable_text(tmp_path: Path) -> None:
    size = 3 * 1024 * 1024 + 17
    path = corpus.write_large_file(tmp_path / "big" / "large.txt", size)
    assert path.stat().st_size == size
    document = parse(path.read_bytes(), "large.txt")
    assert len(document.sections) == 1
    assert document.sections[0].text.startswith("Filler line for size limits")


# --- markdown ----------------------------------------------------------------------------------------


def test_markdown_heading_paths_front_matter_and_fences(good: tuple[Path, dict[str, str]]) -> None:
    root, _ = good
    document = parse_file(root, "guides/keys.md")
    assert document.title == "Signing Key Rotation Guide"  # from the front matter, not the H1
    assert [section.heading_path for section in document.sections] == [
        ("Guide",),
        ("Guide", "Rotation schedule"),
        ("Guide", "Install the new key", "Linux"),
        ("Guide", "Install the new key", "macOS"),
        ("Guide", "Before you rotate"),
    ]
    text = full_text(document)
    assert "release-security" not in text and "---" not in text  # front matter dropped
    linux = document.sections[2].text
    assert "# Not a heading: this line is inside a fenced code block." in linux
    assert document.mime == "text/markdown"


def test_markdown_links_are_collected_raw(good: tuple[Path, dict[str, str]]) -> None:
    root, _ = good
    document = parse_file(root, "guides/keys.md")
    assert document.links == [
        "../ops/backup.md",
        "https://example.com/key-management",
        "https://example.com/hsm",
    ]


def test_markdown_setext_headings(good: tuple[Path, dict[str, str]]) -> None:
    root, _ = good
    document = parse_file(root, "ops/backup.md")
    assert document.title == "Database Backups"
    assert [section.heading_path for section in document.sections] == [
        ("Database Backups",),
        ("Database Backups", "Retention"),
        ("Database Backups", "Restore drill"),
    ]
    assert "=====" not in full_text(document) and "-----" not in full_text(document)
    assert document.links == ["../guides/keys.md"]


def test_markdown_edge_cases() -> None:
    source = b"""\
Intro before any heading.

# Top #

## Empty child

### Deep `code` heading with [a link](x.md)

Deep body.

- a list item
---

~~~
## fenced with tildes
~~~

#hashtag is not a heading
Reference: [docs][1]

[1]: https://example.com/ref
[anchor](#local) [mail](mailto:a@b.c) <https://example.com/auto>
"""
    document = parse(source, "notes/edge.md")
    assert document.title == "Top"  # first H1, closing hashes stripped
    paths = [section.heading_path for section in document.sections]
    # "Empty child" has no body: no section of its own, but it is in its child's path.
    assert paths == [(), ("Top", "Empty child", "Deep code heading with a link")]
    deep = document.sections[1].text
    assert deep.startswith("Deep body.")
    assert "- a list item\n---" in deep  # a dash line under a list item is a thematic break
    assert "## fenced with tildes" in deep
    assert "#hashtag is not a heading" in deep
    assert document.links == ["x.md", "https://example.com/ref", "https://example.com/auto"]


def test_markdown_title_falls_back_to_the_file_stem() -> None:
    assert parse(b"## Only a level two heading\n\ntext\n", "docs/guide/setup.md").title == "setup"


def alias_bomb(levels: int) -> str:
    """YAML whose last anchor expands to 9**levels strings: "billion laughs" at nine levels."""
    lines = ['lol0: &lol0 "lol"']
    lines += [f"lol{n}: &lol{n} [{', '.join([f'*lol{n - 1}'] * 9)}]" for n in range(1, levels + 1)]
    return "\n".join(lines)


def test_markdown_front_matter_alias_bomb_is_not_expanded() -> None:
    # Expanded, six levels are half a million strings (nine took a minute and 3 GB); the title they
    # make is no title, so the first H1 names the document.
    source = f"---\n{alias_bomb(6)}\ntitle: *lol6\n---\n\n# Real heading\n\nBody text.\n"
    document = parse(source.encode(), "bomb.md")
    assert document.title == "Real heading"
    assert [(section.heading_path, section.text) for section in document.sections] == [
        (("Real heading",), "Body text.")
    ]


def test_markdown_front_matter_that_yaml_cannot_read_leaves_the_document_readable() -> None:
    nested = "[" * 20_000 + "]" * 20_000  # deeper than any YAML reader follows
    document = parse(f"---\ntitle: Deep\nx: {nested}\n---\nBody text.\n".encode(), "deep.md")
    assert document.title == "Deep"  # read from the title line, as for any invalid front matter
    assert full_text(document) == "Body text."
    assert parse(b"---\ntitle: 1.10\n---\nx\n", "v.md").title == "1.10"  # as written, not a float


def test_a_long_block_between_two_thematic_breaks_is_text_not_front_matter() -> None:
    block = "\n\n".join(f"Paragraph {n} of the release notes." for n in range(3000))  # over 64 KB
    document = parse(f"---\n{block}\n\n---\n\n# Next\n\nMore.\n".encode(), "notes.md")
    assert document.sections[0].text.startswith("---\nParagraph 0 of the release notes.")
    assert document.sections[0].text.endswith("Paragraph 2999 of the release notes.\n\n---")
    assert document.sections[1].heading_path == ("Next",)


# --- html --------------------------------------------------------------------------------------------


def test_html_noise_is_absent(good: tuple[Path, dict[str, str]]) -> None:
    root, _ = good
    text = full_text(parse_file(root, "web/vacation.html"))
    for noise in (
        "trackingPixel",
        "analytics-beacon",
        "injected script text",
        "color: red",
        "Acme Intranet Portal",
        "Careers menu",
        "Copyright Acme Footer",
        "cafeteria menu",
        "Enable JavaScript",
    ):
        assert noise not in text, noise


def test_html_sections_blocks_tables_and_links(good: tuple[Path, dict[str, str]]) -> None:
    root, _ = good
    document = parse_file(root, "web/vacation.html")
    assert document.title == "Vacation Policy"
    assert document.metadata["lang"] == "en"
    by_path = {section.heading_path: section.text for section in document.sections}
    assert list(by_path) == [
        ("Vacation Policy",),
        ("Vacation Policy", "Carry-over"),
        ("Vacation Policy", "Public holidays"),
        ("Vacation Policy", "Public holidays", "Regional holidays"),
    ]
    assert by_path[("Vacation Policy",)] == (
        "Every full-time employee receives 25 days of paid vacation per calendar year, "
        "on top of public holidays."
    )
    assert by_path[("Vacation Policy", "Carry-over")].splitlines()[1:] == [
        "- Request leave in the HR portal",
        "- Your manager approves within three working days",
    ]
    assert (
        by_path[("Vacation Policy", "Public holidays")]
        == "Holiday | Date\nNew Year | January 1\nLabour Day | May 1"
    )
    # Navigation links are kept: a crawler follows them even though their text is not indexed.
    assert document.links == ["/", "/benefits.html", "/careers", "holidays/regional.html"]


def test_html_without_main_uses_body_and_first_h1_as_title() -> None:
    page = b"""<html><body><div>Intro <i>text</i><br>second line</div>
        <h1>Release notes</h1><p>Version 2 adds <a href='#x'>anchors</a> and
        <a href="javascript:void(0)">nothing</a>.</p><div hidden>secret</div>
        <table><tr><td><p>a</p><p>b</p></td><td>c</td></tr></table>
        <pre>  keep
    indentation</pre></body></html>"""
    document = parse(page, "https://example.com/notes")
    assert document.title == "Release notes"
    assert document.sections[0].text == "Intro text\nsecond line"
    assert document.sections[0].heading_path == ()
    body = document.sections[1].text
    assert document.sections[1].heading_path == ("Release notes",)
    assert body.splitlines() == [
        "Version 2 adds anchors and nothing.",
        "a b | c",
        "  keep",
        "    indentation",
    ]
    assert "secret" not in body
    assert document.links == []


def test_html_declared_legacy_charset_is_honoured() -> None:
    page = (
        '<html><head><meta charset="windows-1252"><title>Café</title></head><body><p>crème</p></body></html>'
    )
    document = parse(page.encode("cp1252"), "page.html")
    assert document.title == "Café"
    assert full_text(document) == "crème"


# --- pdf ---------------------------------------------------------------------------------------------


def test_pdf_one_section_per_page_with_page_numbers(good: tuple[Path, dict[str, str]]) -> None:
    root, _ = good
    document = parse_file(root, "facilities/handbook.pdf")
    assert document.title == "Facilities Handbook"
    assert document.metadata["pages"] == 3
    assert [(section.page, section.heading_path) for section in document.sections] == [
        (1, ()),
        (2, ()),
        (3, ()),
    ]
    assert document.sections[0].text.startswith("Coffee machine descaling")
    assert "assembly point" in document.sections[1].text
    assert "\r" not in full_text(document)


def test_pdf_title_falls_back_to_first_line_and_blank_pages_are_skipped() -> None:
    data = corpus.simple_pdf(["Quarterly report\nRevenue grew.", "", "Appendix"])
    document = parse(data, "report.pdf")
    assert document.title == "Quarterly report"
    assert [section.page for section in document.sections] == [1, 3]


def test_pdf_without_text_is_a_document_with_a_note() -> None:
    pdf = FPDF()
    pdf.add_page()
    pdf.add_page()
    document = parse(bytes(pdf.output()), "scan.pdf")
    assert document.sections == []
    assert document.metadata == {"pages": 2, "note": "no extractable text (scanned pages? docmill does no OCR)"}
    assert document.title == "scan"


def _pdfium_pdf(pages: int) -> bytes:
    document = pypdfium2.PdfDocument.new()
    for _ in range(pages):
        document.new_page(200, 200)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def refuse_an_encrypted_pdf() -> None:
    """Leave PDFium's last error at "password needed", as any earlier file may."""
    with pytest.raises(CorruptDocumentError, match="encrypted"):
        parse(corpus.encrypted_pdf(), "earlier.pdf")


def test_pdf_without_pages_is_an_empty_document() -> None:
    # PDFium refuses it without setting an error of its own: the last one, of another file, is stale.
    refuse_an_encrypted_pdf()
    document = parse(_pdfium_pdf(0), "blank/export.pdf")
    assert document.sections == []
    assert document.title == "export"
    assert document.metadata == {"pages": 0}


def test_pdf_whose_pages_cannot_be_reached_is_corrupt_with_a_useful_reason() -> None:
    # The page tree says it holds nothing, yet a page exists: PDFium refuses it and calls that "Success".
    data = _pdfium_pdf(1)
    kids = re.search(rb"/Kids\[[^\]]*\]", data)
    assert kids is not None
    data = data.replace(kids.group(0), b"/Kids[]".ljust(len(kids.group(0)))).replace(b"/Count 1", b"/Count 0")
    refuse_an_encrypted_pdf()
    with pytest.raises(CorruptDocumentError, match=r"^corrupt PDF: pdfium could not open it \(lost\.pdf\)$"):
        parse(data, "lost.pdf")


def test_pdf_with_only_an_owner_password_opens() -> None:
    pdf = FPDF()
    pdf.set_encryption(owner_password="owner-only")
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(text="Printing is restricted but reading is not.")
    assert "reading is not" in full_text(parse(bytes(pdf.output()), "restricted.pdf"))


def test_encrypted_pdf_is_reported_as_encrypted() -> None:
    with pytest.raises(CorruptDocumentError, match=r"^encrypted PDF: .*\(salaries\.pdf\)$"):
        parse(corpus.encrypted_pdf(), "salaries.pdf")


def test_500_page_pdf_has_one_section_per_page() -> None:
    data = corpus.simple_pdf([f"Page {n} describes warehouse shelf {n}." for n in range(1, 501)])
    document = parse(data, "catalogue.pdf")
    assert document.metadata["pages"] == 500
    assert len(document.sections) == 500
    assert [section.page for section in document.sections] == list(range(1, 501))
    assert document.sections[499].text == "Page 500 describes warehouse shelf 500."


# --- docx --------------------------------------------------------------------------------------------


def test_docx_heading_paths_tables_in_order_and_metadata(good: tuple[Path, dict[str, str]]) -> None:
    root, _ = good
    document = parse_file(root, "reports/autoscaling.docx")
    assert document.title == "Kubernetes Autoscaling Review"
    assert document.metadata["author"] == "Platform Team"
    assert [section.heading_path for section in document.sections] == [
        (),
        ("Horizontal Pod Autoscaler",),
        ("Horizontal Pod Autoscaler", "Thresholds"),
        ("Cluster Autoscaler",),
    ]
    # The table sits between two paragraphs of its section, rendered row by row.
    assert document.sections[2].text.splitlines() == [
        "Service | Min replicas | Max replicas | CPU target",
        "checkout | 3 | 40 | 70%",
        "search | 2 | 12 | 60%",
        "Replica limits are reviewed after every incident.",
    ]
    assert document.sections[3].text.splitlines() == [
        "Node pools grow by at most five nodes at a time; see the upstream docs",
        "- Spot nodes are drained first when load drops.",
    ]
    assert document.links == ["https://kubernetes.io/docs/concepts/cluster-administration/"]


def test_docx_title_falls_back_to_title_style_then_heading_then_stem() -> None:
    titled = _docx_bytes(lambda d: (d.add_heading("Styled Title", 0), d.add_paragraph("body")))
    assert parse(titled, "a.docx").title == "Styled Title"
    headed = _docx_bytes(lambda d: (d.add_paragraph("intro"), d.add_heading("First Heading", 2)))
    assert parse(headed, "b.docx").title == "First Heading"
    plain = _docx_bytes(lambda d: d.add_paragraph("only text"))
    assert parse(plain, "folder/c.docx").title == "c"


def test_docx_merged_cells_are_written_once() -> None:
    def build(document: docx.document.Document) -> None:
        table = document.add_table(rows=2, cols=3)
        merged = table.cell(0, 0).merge(table.cell(0, 1))
        merged.text = "wide"
        table.cell(0, 2).text = "right"
        for index, text in enumerate(("x", "y", "z")):
            table.cell(1, index).text = text

    document = parse(_docx_bytes(build), "merged.docx")
    assert document.sections[0].text == "wide | right\nx | y | z"


def test_docx_with_broken_xml_is_corrupt() -> None:
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(corpus.autoscaling_docx())) as source,
        zipfile.ZipFile(buffer, "w") as target,
    ):
        for info in source.infolist():
            payload = source.read(info)
            target.writestr(
                info.filename, b"<w:document><unclosed" if info.filename == "word/document.xml" else payload
            )
    with pytest.raises(CorruptDocumentError, match=r"^corrupt DOCX: .*\(broken\.docx\)$"):
        parse(buffer.getvalue(), "broken.docx")


W_NAMESPACE = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'


def _docx_with_document_xml(document_xml: bytes) -> bytes:
    """A real package (python-docx's template, its styles included) around the given main part."""
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(_docx_bytes(lambda d: None))) as source,
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for info in source.infolist():
            target.writestr(info.filename, document_xml if info.filename == "word/document.xml" else source.read(info))
    return buffer.getvalue()


def _body(inner: str) -> bytes:
    return f"<w:document {W_NAMESPACE}><w:body>{inner}</w:body></w:document>".encode()


def _p(text: str, style: str | None = None) -> str:
    properties = f'<w:pPr><w:pStyle w:val="{style}"/></w:pPr>' if style else ""
    return f"<w:p>{properties}<w:r><w:t>{text}</w:t></w:r></w:p>"


def test_docx_vertical_merges_content_controls_and_run_content() -> None:
    def cell(text: str, merge: str = "") -> str:
        return f"<w:tc><w:tcPr>{merge}</w:tcPr>{_p(text) if text else '<w:p/>'}</w:tc>"

    restart, below = '<w:vMerge w:val="restart"/>', "<w:vMerge/>"  # "continue" is the default value
    table = (f"<w:tbl><w:tr>{cell('Region', restart)}{cell('north')}</w:tr>"
             f"<w:tr>{cell('', below)}{cell('south')}</w:tr></w:tbl>")
    control = f"<w:sdt><w:sdtContent>{_p('Contents', 'Heading1')}{_p('In a control')}</w:sdtContent></w:sdt>"
    runs = ("<w:p><w:r><w:t>a</w:t><w:tab/><w:t>b</w:t><w:br/><w:t>c</w:t><w:noBreakHyphen/><w:t>d</w:t></w:r>"
            "<w:ins><w:r><w:t>tracked</w:t></w:r></w:ins></w:p>")
    document = parse(_docx_with_document_xml(_body(control + table + runs + "<w:p/>" * 1000)), "merged.docx")
    assert [(section.heading_path, section.text) for section in document.sections] == [
        (("Contents",), "In a control\nRegion | north\nRegion | south\na\tb\nc-d"),
    ]
    assert document.title == "Contents"


def test_docx_with_a_document_type_declaration_is_corrupt() -> None:
    # No DOCX part has a DTD; entity definitions in one are how XML bombs expand.
    bomb = (b'<?xml version="1.0"?><!DOCTYPE w:document [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
            + _body(_p("&b;&b;&b;")))
    with pytest.raises(CorruptDocumentError, match=r"^corrupt DOCX: a document type declaration.*\(dtd\.docx\)$"):
        parse(_docx_with_document_xml(bomb), "dtd.docx")


_PEAK_MEMORY_SCRIPT = """
import sys
from docmill.parsers import parse

def status_kb(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))

data = sys.stdin.buffer.read()
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # restart the peak (VmHWM) from the memory in use now
before = status_kb("VmRSS")
text = [section.text for section in parse(data, "empty.docx").sections]
print(status_kb("VmHWM") - before, repr(text))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resettable peak RSS")
def test_docx_empty_paragraphs_are_read_without_holding_them() -> None:
    # 200,000 empty paragraphs, 38 KB zipped: read as a whole tree they took 30 MB (the 120 KB file of
    # ten million, 1.4 GB and three minutes); streamed, nothing in memory grows with their number.
    data = _docx_with_document_xml(_body(_p("first") + "<w:p/>" * 200_000 + _p("last")))
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", _PEAK_MEMORY_SCRIPT], input=data, capture_output=True,
                            check=True, cwd=root)
    growth_kb, text = result.stdout.decode().split(" ", 1)
    assert text.strip() == repr(["first\nlast"])
    assert int(growth_kb) < 8_000


# --- code --------------------------------------------------------------------------------------------


def test_code_is_one_verbatim_section_with_its_language(good: tuple[Path, dict[str, str]]) -> None:
    root, _ = good
    document = parse_file(root, "src/tax_calendar.py")
    assert document.title == "tax_calendar.py"
    assert document.metadata["language"] == "python"
    assert len(document.sections) == 1 and document.sections[0].heading_path == ()
    assert document.sections[0].text == corpus.TAX_PY.rstrip()
    assert parse_file(root, "src/irrigation/controller.go").metadata["language"] == "go"


@pytest.mark.parametrize(
    ("name", "language"),
    [
        ("Dockerfile", "dockerfile"),
        ("ci/Makefile", "make"),
        ("app.tsx", "typescript"),
        ("x.yml", "yaml"),
        ("run.sh", "shell"),
        ("lib.rs", "rust"),
        ("q.sql", "sql"),
    ],
)
def test_code_languages(name: str, language: str) -> None:
    document = parse(b"\n# comment\n    indented line\n\n", name)
    assert document.metadata["language"] == language
    assert document.sections[0].text == "# comment\n    indented line"


# --- csv ---------------------------------------------------------------------------------------------


def test_csv_rows_render_with_headers(good: tuple[Path, dict[str, str]]) -> None:
    root, _ = good
    document = parse_file(root, "data/aquarium.csv")
    assert document.metadata["rows"] == 4
    assert document.metadata["columns"] == ["species", "water_temperature_c", "ph", "minimum_tank_litres"]
    lines = full_text(document).splitlines()
    assert lines[0] == "species: Neon tetra; water_temperature_c: 22-26; ph: 6.0-7.0; minimum_tank_litres: 40"
    assert lines[3].startswith("species: Goldfish, fancy;")  # the quoted comma stays inside its cell
    assert document.title == "aquarium"
    assert document.mime == "text/csv"


def test_big_csv_is_split_into_sections_of_at_most_50_rows() -> None:
    rows = "\n".join(f"{n},item {n}" for n in range(120))
    document = parse(f"id,label\n{rows}\n".encode(), "items.csv")
    assert document.metadata["rows"] == 120
    assert [len(section.text.splitlines()) for section in document.sections] == [50, 50, 20]
    assert all(section.heading_path == () for section in document.sections)
    assert document.sections[2].text.splitlines()[-1] == "id: 119; label: item 119"


def test_a_csv_cell_longer_than_the_csv_module_default_is_read() -> None:
    body = "word " * 60_000  # 300 KB in one cell, over the stdlib's 128 KB field limit
    document = parse(f'title,body\nLong one,"{body}"\n'.encode(), "articles.csv")
    assert document.metadata["rows"] == 1
    assert full_text(document).startswith("title: Long one; body: word word")


def test_csv_dialect_is_sniffed_and_tsv_uses_tabs() -> None:
    semicolons = parse(b"city;country;population\nLyon;France;522000\nGhent;Belgium;265000\n", "c.csv")
    assert semicolons.sections[0].text.splitlines()[0] == "city: Lyon; country: France; population: 522000"
    tabs = parse(b"name\tnote\nAda\tlikes commas, really\n", "people.tsv")
    assert tabs.sections[0].text == "name: Ada; note: likes commas, really"
    assert tabs.mime == "text/tab-separated-values"


def test_csv_empty_cells_are_skipped_and_extra_cells_get_names() -> None:
    document = parse(b"a,b,\n1,,3,4\n\n,,\n", "odd.csv")
    assert document.metadata["columns"] == ["a", "b", "column_3"]
    assert full_text(document) == "a: 1; column_3: 3; column_4: 4"


# --- json --------------------------------------------------------------------------------------------


def test_json_list_of_records_is_one_line_per_record(good: tuple[Path, dict[str, str]]) -> None:
    root, _ = good
    document = parse_file(root, "data/telescopes.json")
    assert document.metadata["records"] == 2
    assert full_text(document).splitlines()[0] == (
        "name: Great Refractor; aperture_mm: 680; focal_length_mm: 10500; mount.type: equatorial; "
        "mount.drive: clockwork; dome: B; tags: historic, visual"
    )


def test_json_object_is_flattened_with_dotted_keys() -> None:
    value = {
        "service": {"name": "checkout", "limits": {"cpu": "2", "memory": None}},
        "enabled": True,
        "ports": [80, 443],
        "routes": [{"path": "/a"}, {"path": "/b"}],
        "notes": "line one\nline two " + "x" * 300,
    }
    document = parse(json.dumps(value).encode(), "config.json")
    lines = full_text(document).splitlines()
    assert lines[:7] == [
        "service.name: checkout",
        "service.limits.cpu: 2",
        "service.limits.memory: null",
        "enabled: true",
        "ports: 80, 443",
        "routes.0.path: /a",
        "routes.1.path: /b",
    ]
    assert lines[7] == "notes: line one line two " + "x" * 300  # long values are kept whole
    assert document.metadata["keys"] == ["service", "enabled", "ports", "routes", "notes"]


def test_invalid_json_names_line_and_column() -> None:
    with pytest.raises(
        CorruptDocumentError, match=r"^invalid JSON: line 3 column 1: Expecting value \(x\.json\)$"
    ):
        parse(b'{"a": 1,\n "b": \n}', "x.json")


def test_jsonl_one_record_per_line_and_bad_lines_named() -> None:
    document = parse(b'{"id": 1, "tag": "a"}\n\n{"id": 2, "tag": "b"}\n', "events.ndjson")
    assert full_text(document) == "id: 1; tag: a\nid: 2; tag: b"
    assert document.metadata["records"] == 2
    with pytest.raises(CorruptDocumentError, match="invalid JSON: line 2 column"):
        parse(b'{"id": 1}\n{"id": \n', "events.jsonl")


def test_json_file_holding_json_lines_is_read_as_such() -> None:
    document = parse(b'{"id": 1}\n{"id": 2}\n', "export.json")
    assert full_text(document) == "id: 1\nid: 2"


def test_html_served_from_a_script_path_is_html() -> None:
    page = b"<!DOCTYPE html><html><body><h1>Shop</h1><p>Open daily.</p></body></html>"
    assert detect_format(page, "/shop/index.php") == "html"
    assert detect_format(b"<?php echo 'hi'; ?>\n", "index.php") == "code"


def test_deeply_nested_html_does_not_hit_the_recursion_limit() -> None:
    depth = 5000
    page = ("<div>" * depth + "<p>deep text</p>" + "</div>" * depth).encode()
    assert full_text(parse(page, "deep.html")) == "deep text"


def test_html_nested_beyond_any_real_page_is_read_as_text() -> None:
    # Lexbor's tree building is quadratic in depth (100,000 levels took 26 s): past MAX_NESTING the
    # page's text is kept without its structure instead.
    depth = 100_000
    page = ("<h1>Title</h1>" + "<div>" * depth + "deep &amp; text" + "</div>" * depth + "<p>after</p>").encode()
    doc = parse(page, "deep.html")
    assert full_text(doc) == "Title\ndeep & text\nafter"
    assert "ignored" in str(doc.metadata["structure"])
    shallow = parse(("<h1>Title</h1>" + "<div>" * 900 + "<p>text</p>" + "</div>" * 900).encode(), "ok.html")
    assert shallow.sections[0].heading_path == ("Title",) and "structure" not in shallow.metadata


def test_json_nested_past_the_recursion_limit_is_corrupt_not_a_crash() -> None:
    # Valid JSON, but nested deeper than Python's json module can follow.
    with pytest.raises(CorruptDocumentError, match="invalid JSON: nested too deeply"):
        parse(b"[" * 100_000 + b"]" * 100_000, "deep.json")


def test_a_docx_that_unzips_too_large_is_refused_before_it_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    import docmill.parsers.docx as docx_parser

    data = corpus.autoscaling_docx()
    assert parse(data, "report.docx").sections  # within the limit: read as usual
    monkeypatch.setattr(docx_parser, "MAX_EXPANDED_BYTES", 10_000)  # this small package is "a bomb" now
    with pytest.raises(DocumentTooLargeError, match="zip bomb"):
        parse(data, "report.docx")
