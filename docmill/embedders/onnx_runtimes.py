"""The engines that run the local ONNX model: onnxruntime by default, or OpenVINO (the openvino extra).

Both run one padded batch of token ids and return the model's ``last_hidden_state``; pooling,
tokenising and the lanes that call them concurrently stay in ``local_onnx``. Measured on this
project's 2-core machine (``docmill benchmark --documents 200``): OpenVINO in float32 gives
onnxruntime's vectors (largest difference 2.6e-7) only 1.11x faster end to end, at 443 MB peak
instead of 255 MB; in bfloat16, on CPUs with that arithmetic, 1.36x at 362 MB, with vectors within
cosine 0.99996. Hence onnxruntime by default, OpenVINO as the opt-in for bfloat16.
"""

from __future__ import annotations

import logging
import queue
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from docmill.errors import ConfigError

OUTPUT = "last_hidden_state"
#: onnxruntime runs a batch while its rows x longest row stay within this many tokens. Its cost per
#: operator call matters on short texts: measured on 2 lanes, 20-token texts ran at 368 chunks/s one
#: per run and 457 under this budget, 45-token ones 227 vs 256, 70-token ones 164 vs 179; texts over
#: 128 tokens (one per run within it) gain nothing from rows, and one 256-token input is the most a
#: run's working memory then holds, as with one row per run.
ORT_TOKENS_PER_RUN = 256

log = logging.getLogger(__name__)


class ModelRunner(Protocol):
    """Runs the ONNX model on one batch; safe to call from several threads at once."""

    input_names: frozenset[str]
    #: Most rows x width tokens one batch should carry (None: as many rows as the batch size allows).
    tokens_per_run: int | None

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The model's ``last_hidden_state`` for ``feeds`` (one array per model input)."""
        ...


class OnnxRuntimeRunner:
    """One shared onnxruntime session, each call single-threaded (the lanes are the parallelism)."""

    def __init__(self, path: Path) -> None:
        options = ort.SessionOptions()
        # One thread per run, and one operator at a time: the parallelism is in the lanes.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # ORT warns about unused initializers on every load
        # Memory patterns are planned per input shape; our batch widths vary, so they only pile up:
        # measured peak RSS 552 MB with them, 420 MB without, at the same speed.
        options.enable_mem_pattern = False
        self._session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self.input_names = frozenset(i.name for i in self._session.get_inputs())
        self.tokens_per_run: int | None = ORT_TOKENS_PER_RUN

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """``last_hidden_state`` of one batch."""
        (hidden,) = self._session.run([OUTPUT], feeds)
        return hidden


class OpenVinoRunner:
    """The model compiled by OpenVINO's CPU plugin with one stream and one infer request per lane.

    OpenVINO runs an infer request without the GIL, so the lanes' threads run in parallel; each
    call borrows a free request, and gets the outputs copied, so the request can serve the next one.
    """

    def __init__(self, path: Path, lanes: int, precision: str) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise ConfigError(f"embedding.runtime openvino: cannot import openvino ({exc}); install it with "
                              "pip install 'docmill[openvino]', or set embedding.runtime: onnxruntime") from None

        core = ov.Core()
        hint = "f32"
        if precision == "bfloat16":
            if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
                hint = "bf16"
            else:
                log.warning("embedding.precision bfloat16: this CPU has no bfloat16 arithmetic; using float32")
        properties = {
            "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "THROUGHPUT",
            "NUM_STREAMS": str(lanes),
            "INFERENCE_NUM_THREADS": str(lanes),
            # The worker's own threads (reading, parsing, storing) share the cores: pinning the
            # streams to cores makes them wait behind those.
            "ENABLE_CPU_PINNING": "NO",
            # The packaged weights are int8; OpenVINO would otherwise quantise activations to int8 on the
            # fly as well, which changes the vectors.
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0",
        }
        try:
            self._compiled = core.compile_model(str(path), "CPU", properties)
        except RuntimeError as exc:
            raise ConfigError(f"embedding.runtime openvino cannot compile {path}: {str(exc)[:300]}; "
                              "set embedding.runtime: onnxruntime") from exc
        self.input_names = frozenset(port.get_any_name() for port in self._compiled.inputs)
        # OpenVINO gains with rows (178, 199, 211 chunks/s at 1, 4, 8 rows): the batch size alone decides.
        self.tokens_per_run: int | None = None
        self._output = self._compiled.output(OUTPUT)
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(lanes):
            self._requests.put(self._compiled.create_infer_request())
        # The bindings set up a static on their first infer while holding the GIL, and wait for the GIL
        # inside it: two lanes making the first call together deadlocked (2 in 10 starts, here). One
        # call on this thread sets it up before any lane can race.
        self.run({name: np.zeros((1, 1), dtype=np.int64) for name in self.input_names})

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """``last_hidden_state`` of one batch, on a free infer request."""
        request = self._requests.get()
        try:
            return request.infer(feeds, share_outputs=False)[self._output]
        finally:
            self._requests.put(request)
