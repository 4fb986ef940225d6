"""Hybrid search's fusion of the vector and text halves."""

from __future__ import annotations

from docmill.backends.base import SearchHit
from docmill.search import VECTOR_WEIGHT, fuse


def _hit(chunk_id: int, score: float) -> SearchHit:
    return SearchHit(chunk_id=chunk_id, document_id=chunk_id, uri=f"/docs/{chunk_id}.md", title=None,
                     heading_path=[], page=None, ordinal=0, char_start=0, char_end=1, text="t", score=score)


def test_a_clear_vector_winner_is_not_pulled_down_by_a_weak_keyword_match() -> None:
    # Reciprocal rank fusion would put 2 first (ranks 2+1 beat 1+3); the scores say 1 is far ahead
    # on meaning and nearly level on keywords.
    vector = [_hit(1, 0.80), _hit(2, 0.50), _hit(3, 0.49)]
    text = [_hit(2, 10.0), _hit(3, 9.8), _hit(1, 9.0)]  # BM25 scale: only the ratio to the best counts
    assert [h.chunk_id for h in fuse(vector, text, 3)] == [1, 2, 3]


def test_a_chunk_both_halves_found_beats_one_only_one_found_a_little_higher() -> None:
    vector = [_hit(1, 0.60), _hit(2, 0.58)]
    text = [_hit(2, 9.0)]
    fused = fuse(vector, text, 2)
    assert [h.chunk_id for h in fused] == [2, 1]
    assert fused[0].score == round(VECTOR_WEIGHT * 0.58 / 0.60 + (1 - VECTOR_WEIGHT), 6)


def test_either_half_may_be_empty_and_k_bounds_the_result() -> None:
    assert [h.chunk_id for h in fuse([], [_hit(4, 3.0), _hit(5, 1.0)], 1)] == [4]
    assert [h.chunk_id for h in fuse([_hit(6, 0.5)], [], 5)] == [6]
    assert fuse([], [], 5) == []
