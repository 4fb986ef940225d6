"""The engines that run the local ONNX model: onnxruntime, and OpenVINO where it is installed.

Both run one padded batch of token ids and return the model's ``last_hidden_state``; pooling,
tokenising and the lanes that call them concurrently stay in ``local_onnx``. Measured on this
project's 2-core machine, all-MiniLM-L6-v2 on 800 real chunks, two lanes: OpenVINO's float32 CPU
plugin is 1.1-1.3x faster than onnxruntime (on onnxruntime's best graph) with the same vectors
(largest difference 2.6e-7), and holds the model in half the memory; its bfloat16 mode is 1.7-2.2x
faster, on CPUs that compute in bfloat16, with vectors within cosine 0.99996.
"""

from __future__ import annotations

import logging
import queue
from pathlib import Path
from typing import Protocol

import numpy as np

from docmill.errors import ConfigError

OUTPUT = "last_hidden_state"

log = logging.getLogger(__name__)


class ModelRunner(Protocol):
    """Runs the ONNX model on one batch; safe to call from several threads at once."""

    input_names: frozenset[str]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The model's ``last_hidden_state`` for ``feeds`` (one array per model input)."""
        ...


class OnnxRuntimeRunner:
    """One shared onnxruntime session, each call single-threaded (the lanes are the parallelism)."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort  # here, so that config validation can ask openvino_installed() cheaply

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

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """``last_hidden_state`` of one batch."""
        (hidden,) = self._session.run([OUTPUT], feeds)
        return hidden


def openvino_installed() -> bool:
    """Whether the openvino package can be imported here (it has wheels for x86-64 and ARM64 only)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


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
                              "pip install openvino, or set embedding.runtime: onnxruntime") from None

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
