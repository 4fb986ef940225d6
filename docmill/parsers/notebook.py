"""Jupyter notebooks (.ipynb): the cells in order as one Markdown document, read by the Markdown parser.

Markdown cells are kept as written, so their headings give the sections and heading paths; code cells
become fenced blocks in the notebook's language, and the text they printed (streams and plain-text
results, cut to MAX_OUTPUT_CHARS each) follows as an output block. Images, HTML and widget outputs
are left out: they are pictures or markup of what the text already says.
"""

from __future__ import annotations

from typing import Any

from docmill.errors import CorruptDocumentError
from docmill.models import ParsedDocument
from docmill.parsers import markdown
from docmill.parsers.tabular import load_json
from docmill.parsers.text import decode_text

MIME = "application/x-ipynb+json"

#: Printed output kept per cell output: a loop printing a million lines is not documentation.
MAX_OUTPUT_CHARS = 2_000


def parse(data: bytes, name: str) -> ParsedDocument:
    """Parse a notebook; one that is not JSON, or not a notebook, is CorruptDocumentError."""
    notebook, _ = load_json(decode_text(data)[0], name)
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not isinstance(cells, list):
        raise CorruptDocumentError(f"corrupt notebook: no list of cells ({name})")
    metadata = notebook.get("metadata") if isinstance(notebook.get("metadata"), dict) else {}
    language = _language(metadata)
    blocks = [block for cell in cells if isinstance(cell, dict) and (block := _cell(cell, language))]
    document = markdown.parse("\n\n".join(blocks).encode(), name)
    return ParsedDocument(title=document.title, sections=document.sections, mime=MIME,
                          metadata={"cells": len(cells), "language": language}, links=document.links)


def _language(metadata: dict[str, Any]) -> str:
    """The notebook's programming language (for the code fences), python when it does not say."""
    info = metadata.get("language_info")
    kernel = metadata.get("kernelspec")
    for source in (info, kernel):
        if isinstance(source, dict):
            value = source.get("language") or source.get("name")
            if isinstance(value, str) and value.split():
                return value.split()[0]
    return "python"


def _cell(cell: dict[str, Any], language: str) -> str:
    """One cell as Markdown ('' for an empty one)."""
    source = _text(cell.get("source")).strip("\n")
    kind = cell.get("cell_type")
    if kind == "markdown":
        return source
    if kind == "raw":
        return _fenced(source, "") if source.strip() else ""
    if kind != "code":
        return ""
    parts = [_fenced(source, language)] if source.strip() else []
    outputs = cell.get("outputs") if isinstance(cell.get("outputs"), list) else []
    printed = [text for output in outputs if isinstance(output, dict) and (text := _printed(output))]
    parts += [_fenced(text, "output") for text in printed]
    return "\n\n".join(parts)


def _printed(output: dict[str, Any]) -> str:
    """The text an output shows: a stream, a plain-text result or an error's name and message."""
    kind = output.get("output_type")
    if kind == "stream":
        text = _text(output.get("text"))
    elif kind in ("execute_result", "display_data"):
        data = output.get("data")
        text = _text(data.get("text/plain")) if isinstance(data, dict) else ""
    elif kind == "error":
        text = f"{_text(output.get('ename'))}: {_text(output.get('evalue'))}"
    else:
        text = ""
    text = text.strip("\n")
    return text[:MAX_OUTPUT_CHARS] + "…" if len(text) > MAX_OUTPUT_CHARS else text


def _text(value: Any) -> str:
    """nbformat's multiline strings: a string, or a list of lines to join."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(item for item in value if isinstance(item, str))
    return ""


def _fenced(text: str, info: str) -> str:
    """``text`` as a fenced code block, the fence longer than any backtick run inside it."""
    longest = max((len(run) for run in text.split("\n") if run and set(run.strip()) == {"`"}), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"

