"""Cross-document relationships, computed once per drained run by the finalizing worker.

Two kinds: explicit links (Markdown/HTML links and relative paths that resolve to another document
of the run) and "similar" edges between documents whose mean chunk vectors are nearest neighbours.
"""

from __future__ import annotations

import posixpath
from urllib.parse import unquote, urlsplit

import numpy as np

from docmill.backends.base import Backend, DocumentLinks, Relationship

SIMILAR_PER_DOCUMENT = 5
SIMILAR_MIN_SCORE = 0.5
_BLOCK = 1024  # rows of the similarity matrix computed at once, to bound memory
#: At most this many scores at once, however many documents: 4 MB of float32, plus 8 MB for the
#: int64 positions the top-k selection returns. Measured on 10,000 documents: 1 << 26 peaked at
#: 209 MB (a worker finalizing went from 257 to 526 MB), 1 << 20 at 26 MB, in the same time.
_BLOCK_CELLS = 1 << 20


def _resolve(doc: DocumentLinks, target: str) -> str | None:
    """The document key a raw link target points to, relative to the linking document's folder."""
    parts = urlsplit(target)
    if parts.scheme and parts.scheme != "file":
        return None
    path = unquote(parts.path)
    if not path:
        return None
    base = posixpath.dirname(doc.key)
    key = posixpath.normpath(path.lstrip("/") if path.startswith("/") else posixpath.join(base, path))
    return None if key.startswith("..") else key


def link_edges(docs: list[DocumentLinks]) -> list[Relationship]:
    """``links_to`` edges for links between documents of the same source."""
    by_key = {(d.source, d.key): d.id for d in docs}
    edges: dict[tuple[int, int], Relationship] = {}
    for doc in docs:
        for target in doc.links:
            key = _resolve(doc, target)
            target_id = by_key.get((doc.source, key)) if key else None
            if target_id is not None and target_id != doc.id:
                edges[(doc.id, target_id)] = Relationship(doc.id, target_id, "links_to", 1.0)
    return list(edges.values())


def similar_edges(ids: list[int], matrix: np.ndarray, per_document: int = SIMILAR_PER_DOCUMENT,
                  min_score: float = SIMILAR_MIN_SCORE) -> list[Relationship]:
    """Each document's nearest neighbours by cosine of unit-norm mean vectors."""
    n = len(ids)
    if n < 2:
        return []
    k = min(per_document, n - 1)
    block = max(1, min(_BLOCK, _BLOCK_CELLS // n))
    edges = []
    for start in range(0, n, block):
        scores = matrix[start:start + block] @ matrix.T
        for row, i in enumerate(range(start, min(start + block, n))):
            scores[row, i] = -np.inf
        top = np.argpartition(scores, n - k, axis=1)[:, n - k:]  # the k highest, without a negated copy
        for row, candidates in enumerate(top):
            for j in candidates:
                score = float(scores[row, j])
                if score >= min_score:
                    edges.append(Relationship(ids[start + row], ids[int(j)], "similar", round(score, 6)))
    return edges


def compute(backend: Backend, run_id: str) -> list[Relationship]:
    """Every relationship of a drained run."""
    edges = link_edges(backend.finished_documents(run_id))
    ids, matrix = backend.document_vectors(run_id)
    return edges + similar_edges(ids, matrix)
