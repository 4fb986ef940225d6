"""Search: vector (cosine), text (BM25 / ts_rank) or hybrid (both, scaled to each half's best, weighted)."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Literal

from docmill.backends import database_url, open_store
from docmill.backends.base import Backend, SearchHit
from docmill.config import Config, EmbeddingConfig
from docmill.embedders import create_embedder
from docmill.embedders.base import Embedder
from docmill.errors import DocmillError
from docmill.stats import stored_runs

Mode = Literal["hybrid", "vector", "text"]
CANDIDATES = 8  # each half of hybrid search contributes k * CANDIDATES candidates (4 lost hit@1 on both sets)
#: Share of the vector half in a hybrid score (the text half has the rest). Measured on two sets of
#: real questions (benchmarks/questions): 0.6 was best or tied on both, against reciprocal rank fusion.
VECTOR_WEIGHT = 0.6

_query_embedders: dict[str, Embedder] = {}
_query_embedders_lock = threading.Lock()


def query_embedder(cfg: EmbeddingConfig) -> Embedder:
    """The embedder for questions, loaded once per process and configuration: loading the local
    model takes ~150 ms, embedding a question ~5 ms, and an application asks many questions."""
    key = cfg.model_dump_json()
    with _query_embedders_lock:
        if key not in _query_embedders:
            _query_embedders[key] = create_embedder(cfg)
        return _query_embedders[key]


def compatible_runs(backend: Backend, config: Config) -> list[str]:
    """Runs whose vectors come from the same embedding model as ``config``."""
    wanted = config.embedding.identity()
    identities = [(r.run_id, _embedding_identity(r.config_json)) for r in stored_runs(backend)]
    matching = [run_id for run_id, identity in identities if identity == wanted]
    if not matching:
        held = sorted({_described(identity) for _, identity in identities if identity is not None})
        raise DocmillError(f"no run in this store was embedded with {_described(wanted)} (it holds "
                           f"{', '.join(held) or 'no readable run config'}): search with the config used for "
                           "ingest (-c FILE)")
    return matching


def _described(identity: dict[str, object]) -> str:
    """``provider/model`` and the settings beside them that change vectors and are not the default."""
    default = EmbeddingConfig().identity()
    extras = [f"{key} {value}" for key, value in identity.items()
              if key not in ("provider", "model") and value != default.get(key)]
    return f"{identity['provider']}/{identity['model']}" + (f" ({', '.join(extras)})" if extras else "")


def _embedding_identity(config_json: str) -> dict[str, object] | None:
    try:
        return Config(**json.loads(config_json)).embedding.identity()
    except (ValueError, TypeError, DocmillError):
        return None


def fuse(vector_hits: list[SearchHit], text_hits: list[SearchHit], k: int) -> list[SearchHit]:
    """Hybrid ranking: each half's scores divided by its best one (cosine and BM25 / ts_rank live on
    different scales), then ``VECTOR_WEIGHT`` of the vector score plus the rest of the text score; a
    chunk only one half found gets nothing from the other. Unlike reciprocal rank fusion this keeps
    how far apart the scores are, so a clear vector winner is not pulled down by a weak keyword match:
    hit@1 0.82 → 0.88 and 0.48 → 0.56 on the two question sets, hit@5 0.97 and 0.79 → 0.85."""
    scores: dict[int, float] = {}
    hits: dict[int, SearchHit] = {}
    for weight, ranking in ((VECTOR_WEIGHT, vector_hits), (1.0 - VECTOR_WEIGHT, text_hits)):
        best = max((h.score for h in ranking), default=0.0)
        for hit in ranking:
            share = weight * hit.score / best if best > 0 else 0.0
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + share
            hits.setdefault(hit.chunk_id, hit)
    ranked = sorted(scores, key=lambda cid: -scores[cid])[:k]
    return [replace(hits[cid], score=round(scores[cid], 6)) for cid in ranked]


def search(query: str, config: Config | str | Path | None = None, *, db: str | None = None, k: int = 10,
           mode: Mode = "hybrid", run_ids: list[str] | None = None) -> list[SearchHit]:
    """The ``k`` chunks that best answer ``query``."""
    cfg = config if isinstance(config, Config) else Config.load(config)
    if not query.strip():
        raise DocmillError("the search query is empty")
    backend = open_store(database_url(cfg, db), cfg)
    try:
        runs = run_ids or compatible_runs(backend, cfg)
        if mode == "text":
            return backend.text_search(query, k, runs)
        vector_hits = backend.vector_search(query_embedder(cfg.embedding).embed_query(query), k * CANDIDATES, runs)
        if mode == "vector":
            return vector_hits[:k]
        return fuse(vector_hits, backend.text_search(query, k * CANDIDATES, runs), k)
    finally:
        backend.close()
