"""The leader's jobs: discover documents, enqueue them idempotently, and remove vanished ones.

Exactly one worker of a run holds the leader lease at a time (renewed by its heartbeat thread);
if it dies, the lease lapses and any other worker takes over and redoes the pass, which is safe
because enqueueing is an idempotent upsert.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice

from docmill.backends.base import MAX_KEY_BYTES, Backend
from docmill.backends.common import refs_to_write
from docmill.errors import SourceError
from docmill.models import DocumentRef
from docmill.sources.base import Source

log = logging.getLogger(__name__)
UPSERT_BATCH = 500
WHOLE_LISTING = 50_000
#: Over-long keys named one by one in a pass's warnings; the rest are counted.
NAMED_SKIPS = 10


@dataclass
class DiscoveryReport:
    """What one discovery pass found."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: int = 0  # listed, but with a key too long to store
    completed: bool = False
    warnings: list[str] = field(default_factory=list)


def discover(backend: Backend, run_id: str, generation: int, sources: dict[str, Source],
             keep_going: Callable[[], bool]) -> DiscoveryReport:
    """Enqueue every document of every source; remove the ones a complete pass no longer sees.

    The first pass writes only new and changed documents, so a re-run over an unchanged source
    writes nothing. When the store then holds more documents than the pass listed, some vanished:
    a second pass stamps every listed document as seen, and the unstamped rest are removed.
    """
    report = DiscoveryReport()
    for name, source in sources.items():
        try:
            seen = _enqueue(backend, run_id, generation, name, source, keep_going, report, mark_seen=False)
            if seen is None:
                return report
            held = backend.count_source_documents(run_id, name)
            if seen == 0 and held > 0:
                # An unmounted disk or emptied folder must not wipe a whole store.
                report.warnings.append(f"source {name!r} listed no documents although the store holds "
                                       f"{held}: not deleting them (is the folder empty or unmounted?)")
                log.warning("%s", report.warnings[-1])
                continue
            if held == seen:
                continue  # every stored document was listed again: none vanished
            if _enqueue(backend, run_id, generation, name, source, keep_going, report, mark_seen=True) is None:
                return report
        except SourceError as exc:
            report.warnings.append(f"{exc}; its documents are kept as they are")
            log.error("%s", exc)
            continue
        removed = backend.remove_unseen(run_id, name, generation)
        report.removed += len(removed)
        for uri in removed:
            log.info("removed %s (no longer in source %s)", uri, name)
    if report.skipped > NAMED_SKIPS:
        report.warnings.append(f"and {report.skipped - NAMED_SKIPS} more files skipped for paths over "
                               f"{MAX_KEY_BYTES} bytes")
    backend.finish_discovery(run_id, generation)
    report.completed = True
    return report


def _enqueue(backend: Backend, run_id: str, generation: int, name: str, source: Source,
             keep_going: Callable[[], bool], report: DiscoveryReport, *, mark_seen: bool) -> int | None:
    """One listing of ``source`` upserted in batches; how many refs it listed (None: interrupted).
    The marking pass adds only what appeared since the first to the report."""
    seen = 0
    for listed in _batches(source.discover()):
        batch = _keyed(listed, None if mark_seen else report)
        if not keep_going():
            log.info("discovery of %s interrupted (leadership lost or stopping)", name)
            return None
        counts = backend.upsert_documents(run_id, batch, generation, mark_seen=mark_seen)
        report.new += counts.new
        report.changed += counts.changed
        if not mark_seen:
            report.unchanged += counts.unchanged
        seen += len(batch)
    return seen


def _batches(refs: Iterator[DocumentRef]) -> Iterator[list[DocumentRef]]:
    """``refs`` in lists of UPSERT_BATCH. A SourceError comes after the refs listed before it, so a
    source that fails part-way (an unreadable sub-folder) still has what it listed enqueued."""
    while True:
        batch: list[DocumentRef] = []
        try:
            batch.extend(islice(refs, UPSERT_BATCH))
        except SourceError:
            if batch:
                yield batch
            raise
        if not batch:
            return
        yield batch


def _keyed(batch: list[DocumentRef], report: DiscoveryReport | None) -> list[DocumentRef]:
    """The refs whose keys a store can hold; each one left out is warned of in ``report``."""
    # A character is at most 4 bytes in UTF-8: most keys are measured without encoding them.
    if all(len(r.key) * 4 <= MAX_KEY_BYTES for r in batch):
        return batch
    kept = []
    for ref in batch:
        if (size := len(ref.key.encode())) <= MAX_KEY_BYTES:
            kept.append(ref)
        elif report is not None:
            report.skipped += 1
            if report.skipped <= NAMED_SKIPS:
                shown = ref.uri if len(ref.uri) <= 160 else f"{ref.uri[:70]}…{ref.uri[-70:]}"
                report.warnings.append(f"skipped {shown}: its path inside source {ref.source!r} is {size} "
                                       f"bytes, over the {MAX_KEY_BYTES} a document key may have; move it "
                                       "higher up or shorten its folder names")
                log.warning("%s", report.warnings[-1])
    return kept


def sources_unchanged(backend: Backend, sources: dict[str, Source], run_id: str) -> bool:
    """True when the sources list exactly the documents the run holds, at the versions it holds;
    False as soon as anything differs (new, changed, moved or vanished) or a source cannot be listed.

    A pure read: an ingest that finds nothing to do writes nothing at all (no run, worker, leader or
    finalize rows), which is what makes a no-change re-run cost little more than the listing.
    """
    for name, source in sources.items():
        # Up to WHOLE_LISTING documents, one read of the source's rows beats a lookup per batch; above
        # that, batches keep a huge source's listing out of memory.
        whole = backend.source_versions(run_id, name, WHOLE_LISTING)
        stored = len(whole) if whole is not None else backend.count_source_documents(run_id, name)
        seen = 0
        try:
            for listed in _batches(source.discover()):
                batch = _keyed(listed, None)
                known = whole if whole is not None else backend.stored_versions(run_id, name,
                                                                                [r.key for r in batch])
                seen += len(batch)
                if seen > stored or refs_to_write(batch, known, False):
                    return False
        except SourceError:
            return False  # the full pass reports it
        if seen != stored:
            return False
    return True
