"""Small value types passed between sources, parsers, chunker, embedder and backends."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class DocState(enum.StrEnum):
    """States of a document row; the queue and the registry are the same table."""

    PENDING = "pending"
    CLAIMED = "claimed"
    DONE = "done"
    DEAD = "dead"


class RunState(enum.StrEnum):
    """States of a run: drained runs are finalized by exactly one worker."""

    INGESTING = "ingesting"
    FINALIZING = "finalizing"
    COMPLETE = "complete"


# Not frozen: a re-run builds one per file, and a frozen dataclass's __init__ costs four times as much.
@dataclass(slots=True)
class DocumentRef:
    """A document as discovered by a source, before it is read (treat it as immutable)."""

    source: str
    key: str  # stable identity inside the source, e.g. a relative path
    uri: str  # what a user sees and what a fetch needs, e.g. an absolute path or URL
    size: int | None = None
    version: str | None = None  # cheap change fingerprint (mtime+size, ETag, commit); None = unknown
    depth: int = 0
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Section:
    """A run of text sharing one heading path (and page, for paged formats)."""

    text: str
    heading_path: tuple[str, ...] = ()
    page: int | None = None


@dataclass(slots=True)
class ParsedDocument:
    """What a parser returns: readable text split into sections, plus metadata."""

    title: str | None
    sections: list[Section]
    mime: str
    metadata: dict[str, Any] = field(default_factory=dict)
    links: list[str] = field(default_factory=list)  # raw link targets found in the document


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a document to embed and store."""

    ordinal: int
    text: str  # the chunk's own text (what search shows)
    embed_text: str  # what the embedder sees (heading path prepended when configured)
    heading_path: tuple[str, ...] = ()
    page: int | None = None
    char_start: int = 0
    char_end: int = 0
    token_count: int = 0
