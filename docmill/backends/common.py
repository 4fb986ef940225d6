"""Pieces both backends share: vector encoding, row mapping, and the rules around the SQL."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from docmill.backends.base import (
    ClaimedDocument,
    CompletionStats,
    DocumentResult,
    Existing,
    RunInfo,
    UpsertCounts,
)
from docmill.models import DocumentRef

#: Rows per statement when a list of keys goes into an ``IN (…)`` list.
IN_BATCH = 500


def to_blob(vector: np.ndarray) -> bytes:
    """A float32 vector as little-endian bytes."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    """Bytes written by ``to_blob`` back to a float32 vector."""
    return np.frombuffer(blob, dtype="<f4")


def new_token_prefix() -> str:
    """A fresh prefix for the lease tokens of one claim (the document id makes each unique)."""
    return uuid.uuid4().hex


def batched(items: Sequence[Any], size: int = IN_BATCH) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def refs_to_write(refs: Sequence[DocumentRef], existing: Existing, mark_seen: bool) -> list[DocumentRef]:
    """The refs an upsert must write: all of them when marking them seen, else the new or changed."""
    if mark_seen:
        return list(refs)
    return [r for r in refs if (known := existing.get(r.key)) is None or known[0] != r.version or known[2] != r.uri]


def existing_from_rows(rows: Iterable[Sequence[Any]]) -> Existing:
    """``(key, version, state, uri)`` rows as Existing."""
    return {key: (version, state, uri) for key, version, state, uri in rows}


def within(limit: int, rows: Iterable[Sequence[Any]]) -> Existing | None:
    """``(key, version, state, uri)`` rows as Existing, or None when there are more than ``limit``."""
    existing = existing_from_rows(rows)
    return existing if len(existing) <= limit else None


def count_upserts(refs: Sequence[DocumentRef], existing: Existing) -> UpsertCounts:
    """Compare discovered refs with what is already stored."""
    new = changed = unchanged = 0
    for ref in refs:
        if ref.key not in existing:
            new += 1
        elif existing[ref.key][0] != ref.version:
            changed += 1
        else:
            unchanged += 1
    return UpsertCounts(new=new, changed=changed, unchanged=unchanged)


def claimed_documents(rows: Iterable[Sequence[Any]]) -> list[ClaimedDocument]:
    """Claims from rows of (id, run_id, source, doc_key, uri, attempts, lease_token, version, content_hash, depth)."""
    return [ClaimedDocument(id=r[0], run_id=r[1], source=r[2], key=r[3], uri=r[4], attempts=r[5],
                            lease_token=r[6], version=r[7], content_hash=r[8], depth=r[9]) for r in rows]


def run_from_row(row: Sequence[Any]) -> RunInfo:
    """Map a ``get_run`` row (times already epoch seconds) to RunInfo."""
    return RunInfo(run_id=row[0], state=row[1], discovery_gen=int(row[2]), discovered_gen=int(row[3]),
                   leader_id=row[4], leader_expires_at=row[5], shutdown_requested=bool(row[6]),
                   finalize_count=int(row[7]), created_at=float(row[8]), updated_at=float(row[9]),
                   config_json=row[10])


def chunk_rows(document_id: int, result: DocumentResult) -> list[dict[str, Any]]:
    """One dict per chunk row (vector still a numpy row): SQLite inserts them, PostgreSQL sends them as arrays."""
    return [
        {"document_id": document_id, "ordinal": c.ordinal, "text": c.text,
         "heading_path": json.dumps(list(c.heading_path), ensure_ascii=False), "page": c.page,
         "char_start": c.char_start, "char_end": c.char_end, "token_count": c.token_count,
         "text_hash": h, "embedding": v}
        for c, h, v in zip(result.chunks, result.text_hashes, result.vectors, strict=True)
    ]


def done_params(doc_id: int, lease_token: str, version: str | None, result: DocumentResult) -> dict[str, Any]:
    """Parameters of the fenced ``mark_done`` statement."""
    return {"id": doc_id, "lease_token": lease_token, "version": version,
            "content_hash": result.content_hash, "title": result.title, "mime": result.mime,
            "chunk_count": len(result.chunks), "links": json.dumps(result.links, ensure_ascii=False),
            "metadata": json.dumps(result.metadata, ensure_ascii=False, default=str)}


def backoff_delay(attempt: int, base: float, cap: float, exponential: bool) -> float:
    """Seconds before retry number ``attempt`` (1-based): doubling with full jitter, capped."""
    delay = base * (2 ** (attempt - 1)) if exponential else base
    delay = min(delay, cap)
    # Jitter spreads retries of a batch that failed together (a 429 storm) over time.
    return delay * (0.5 + random.random() / 2)


def fts_query(text: str) -> str:
    """A user's question as a safe full-text query: its words, quoted, joined by OR."""
    words = [w for w in "".join(ch if ch.isalnum() else " " for ch in text).split() if w]
    return " OR ".join(f'"{w}"' for w in words)


def completion_stats(durations: Sequence[float]) -> CompletionStats:
    """Count, mean and 95th percentile of attempt durations."""
    if not durations:
        return CompletionStats(0, None, None)
    values = np.asarray(durations, dtype=np.float64)
    return CompletionStats(len(values), float(values.mean()), float(np.percentile(values, 95)))


# -- operations: the events both backends write ------------------------------------------------
def discovery_kinds(refs: Sequence[DocumentRef], existing: Existing) -> list[list[str]]:
    """[[key, "discovered" | "changed"], …] for the refs an upsert creates or changes (once per key)."""
    kinds: dict[str, str] = {}
    for ref in refs:
        if ref.key not in existing:
            kinds.setdefault(ref.key, "discovered")
        elif existing[ref.key][0] != ref.version:
            kinds.setdefault(ref.key, "changed")
    return [[k, v] for k, v in kinds.items()]


def event_detail(**values: Any) -> str:
    """An event's detail as a JSON object (None values left out)."""
    return json.dumps({k: v for k, v in values.items() if v is not None}, ensure_ascii=False, default=str)


def done_detail(result: DocumentResult) -> str:
    """Detail of a ``done`` event: chunks written and the content hash."""
    return event_detail(chunks=len(result.chunks), content_hash=result.content_hash, title=result.title)


FENCED_DETAIL = event_detail(reason="completion rejected: the lease was lost (another worker or an "
                                    "operator took the document over)")
