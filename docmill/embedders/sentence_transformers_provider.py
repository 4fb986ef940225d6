"""Embedder backed by sentence-transformers (PyTorch): ``pip install 'docmill[sentence-transformers]'``.

sentence-transformers (and torch, which takes seconds to import) is imported only when this
provider is chosen.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tokenizers

from docmill.config import EmbeddingConfig
from docmill.embedders.base import check_model_limits, l2_normalize, untruncated_copy
from docmill.errors import ConfigError, DocmillError


class SentenceTransformersEmbedder:
    """``sentence_transformers.SentenceTransformer`` on the CPU behind the ``Embedder`` contract."""

    def __init__(self, cfg: EmbeddingConfig, threads: int | None = None) -> None:
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ConfigError("embedding.provider 'sentence_transformers' needs the sentence-transformers "
                              "package: pip install 'docmill[sentence-transformers]'") from None
        if cfg.threads or threads:
            # torch's pool is per process, and a docmill worker is one process: set it, not share it.
            torch.set_num_threads(cfg.threads or threads)
        self.model_id = f"sentence_transformers/{cfg.model}"
        self.batch_size = cfg.batch_size
        try:
            self._model = SentenceTransformer(cfg.model)
        except Exception as exc:  # unknown name, no network, corrupt cache: say which model
            raise ConfigError(f"embedding.model {cfg.model!r}: sentence-transformers cannot load it: "
                              f"{exc}") from exc
        get_dim = (getattr(self._model, "get_sentence_embedding_dimension", None)
                   or self._model.get_embedding_dimension)
        self.dimension = int(get_dim())
        model_limit = int(self._model.max_seq_length or cfg.max_sequence_length)
        check_model_limits(cfg.model, self.dimension, model_limit, cfg.dimensions, cfg.max_sequence_length)
        self._model.max_seq_length = cfg.max_sequence_length
        self.max_tokens = cfg.max_sequence_length

    def tokenizer(self) -> tokenizers.Tokenizer | None:
        """The model's fast (Rust) tokenizer, untruncated and unpadded; None for slow tokenizers."""
        backend = getattr(getattr(self._model, "tokenizer", None), "backend_tokenizer", None)
        return untruncated_copy(backend) if isinstance(backend, tokenizers.Tokenizer) else None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts`` (sentence-transformers sorts by length itself)."""
        if not texts:
            return np.empty((0, self.dimension), dtype=np.float32)
        try:
            vectors = self._model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                         normalize_embeddings=True, show_progress_bar=False)
        except Exception as exc:
            raise DocmillError(f"embedding with {self.model_id} failed on {len(texts)} texts: {exc}") from exc
        return l2_normalize(vectors)

    def embed_query(self, text: str) -> np.ndarray:
        """Vector of one query."""
        return self.embed([text])[0]
