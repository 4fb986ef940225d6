"""Embedder backed by fastembed (Qdrant's ONNX models): ``pip install 'docmill[fastembed]'``.

fastembed is imported only when this provider is chosen, so docmill runs without it. Its models are
downloaded from the Hugging Face hub on first use (or read from fastembed's cache).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tokenizers

from docmill.config import EmbeddingConfig
from docmill.embedders.base import check_model_limits, l2_normalize, untruncated_copy
from docmill.errors import ConfigError, DocmillError


class FastEmbedEmbedder:
    """``fastembed.TextEmbedding`` behind the docmill ``Embedder`` contract."""

    def __init__(self, cfg: EmbeddingConfig, threads: int | None = None) -> None:
        try:
            from fastembed import TextEmbedding
        except ImportError:
            raise ConfigError("embedding.provider 'fastembed' needs the fastembed package: "
                              "pip install 'docmill[fastembed]'") from None
        self.model_id = f"fastembed/{cfg.model}"
        self.batch_size = cfg.batch_size
        try:
            self._model = TextEmbedding(model_name=cfg.model, threads=cfg.threads or threads)
        except ValueError as exc:  # fastembed's answer to a model name it does not know
            raise ConfigError(f"embedding.model {cfg.model!r}: {exc}") from exc
        except Exception as exc:  # download or load failure: name what failed rather than a bare trace
            raise DocmillError(f"embedding.provider 'fastembed': cannot load model {cfg.model!r}: "
                               f"{exc}") from exc
        self.dimension = int(self._model.embedding_size)
        # fastembed truncates at the model's own limit; honour max_sequence_length when it is lower
        # (it is part of the run id, so the config must describe what the model really sees).
        self._tokenizer: tokenizers.Tokenizer | None = getattr(getattr(self._model, "model", None),
                                                               "tokenizer", None)
        model_limit = cfg.max_sequence_length
        if self._tokenizer is not None and self._tokenizer.truncation:
            model_limit = int(self._tokenizer.truncation["max_length"])
        check_model_limits(cfg.model, self.dimension, model_limit, cfg.dimensions, cfg.max_sequence_length)
        if self._tokenizer is not None:
            self._tokenizer.enable_truncation(max_length=cfg.max_sequence_length)
        self.max_tokens = cfg.max_sequence_length

    def tokenizer(self) -> tokenizers.Tokenizer | None:
        """An untruncated, unpadded copy of fastembed's tokenizer, or None if it is not reachable."""
        return untruncated_copy(self._tokenizer) if self._tokenizer is not None else None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts`` (fastembed yields one array per text; they are stacked)."""
        if not texts:
            return np.empty((0, self.dimension), dtype=np.float32)
        try:
            vectors = np.vstack(list(self._model.embed(list(texts), batch_size=self.batch_size)))
        except Exception as exc:
            raise DocmillError(f"embedding with {self.model_id} failed on {len(texts)} texts: {exc}") from exc
        # Most fastembed models normalise already; doing it again is cheap and makes it a guarantee.
        return l2_normalize(vectors)

    def embed_query(self, text: str) -> np.ndarray:
        """Vector of one query; fastembed adds the model's query prefix where it has one."""
        try:
            vector = next(iter(self._model.query_embed(text)))
        except Exception as exc:
            raise DocmillError(f"embedding a query with {self.model_id} failed: {exc}") from exc
        return l2_normalize(np.asarray(vector))
