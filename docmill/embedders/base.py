"""The embedder contract every provider implements, plus small helpers they share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import tokenizers

from docmill.errors import ConfigError


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors.

    ``model_id`` is stored next to every vector so that vectors of different models are never
    compared; ``max_tokens`` is the longest input (special tokens included) the model sees, which
    the chunker uses to size chunks.
    """

    model_id: str
    dimension: int
    max_tokens: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts``: shape ``(len(texts), dimension)``, float32, unit-norm rows."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """Vector of one search query: shape ``(dimension,)``, float32, unit norm."""
        ...

    def tokenizer(self) -> tokenizers.Tokenizer | None:
        """An untruncated, unpadded copy of the model's tokenizer for chunk sizing, or None."""
        ...


def untruncated_copy(tok: tokenizers.Tokenizer) -> tokenizers.Tokenizer:
    """A copy of ``tok`` with truncation and padding switched off.

    A copy, because the embedder's own tokenizer must keep truncating; and untruncated, because a
    tokenizer that cuts at N tokens would make every long text look N tokens long to the chunker.
    """
    copy = tokenizers.Tokenizer.from_str(tok.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32; all-zero rows stay zero instead of becoming NaN."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        return l2_normalize(vectors[None, :])[0]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def check_model_limits(provider_model: str, dimension: int, model_max_tokens: int,
                       dimensions: int | None, max_sequence_length: int) -> None:
    """Refuse a configured ``dimensions``/``max_sequence_length`` the model cannot honour.

    Raising at start-up beats storing vectors of the wrong size, or silently cutting inputs at a
    length other than the one the run id was computed from.
    """
    if dimensions is not None and dimensions != dimension:
        raise ConfigError(f"embedding.dimensions {dimensions} does not match {provider_model}, which makes "
                          f"{dimension}-dimensional vectors; remove the key or set it to {dimension}")
    if max_sequence_length > model_max_tokens:
        raise ConfigError(f"embedding.max_sequence_length {max_sequence_length} is above the "
                          f"{model_max_tokens} tokens {provider_model} supports; "
                          f"set it to {model_max_tokens} or less")
