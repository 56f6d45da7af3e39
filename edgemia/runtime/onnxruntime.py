"""The onnxruntime backend: ONNX Runtime's CPU execution provider with its default optimizations.

At the default optimization level ONNX Runtime fuses QDQ node groups into
integer kernels, which is the arithmetic the native kernel's onnxruntime
mode reproduces. The session runs in a child process (see
edgemia.runtime.isolated) and sees a model only after the native loader's
checks pass.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from edgemia.errors import ModelFormatError
from edgemia.runtime.io import check_io
from edgemia.runtime.isolated import IsolatedRunner
from edgemia.runtime.litert import check_natively


logger = logging.getLogger(__name__)


def load_session(model_path: str, threads: int):
    """Build a function that runs batches on an ONNX Runtime session; called in the child process."""
    import onnxruntime as ort
    from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as OrtNotImplemented

    from edgemia._stderr import native_stderr_to_log

    def open_session(exact_kernels: bool):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if exact_kernels:
            # Without VNNI, x86 u8 x s8 kernels can saturate 16-bit pair sums.
            # This option makes ONNX Runtime use exact kernels there.
            options.add_session_config_entry("session.x64quantprecision", "1")
        options.log_severity_level = 3
        with native_stderr_to_log("ONNX Runtime"):
            return ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])

    try:
        session = open_session(exact_kernels=True)
    except OrtNotImplemented as exc:
        # ONNX Runtime 1.32 registers no int8 QLinearMatMul kernel under that
        # option, so QOperator files with a dense layer load without it, with
        # the kernels a device's default session runs.
        # NOTE: on x86 CPUs without VNNI those kernels may saturate pair sums,
        # where the native kernel's onnxruntime mode stays exact.
        logger.warning("%s: ONNX Runtime has no exact-precision kernel for an op (%s), so the model "
                       "loads with the default kernels", model_path, str(exc).splitlines()[0])
        session = open_session(exact_kernels=False)
    input_name = session.get_inputs()[0].name
    if not _quantizes_per_batch(model_path):
        return lambda x: session.run(None, {input_name: x})[0]

    def run_each_record(x: np.ndarray) -> np.ndarray:
        outputs = [session.run(None, {input_name: x[i : i + 1]})[0] for i in range(len(x))]
        return np.concatenate(outputs) if outputs else session.run(None, {input_name: x})[0]

    return run_each_record


def _quantizes_per_batch(model_path: str) -> bool:
    """True when the graph has DynamicQuantizeLinear, whose scale ONNX Runtime takes over the whole batch.

    One record's logits would then depend on the other records run with it,
    so such models run one record at a time, as on a device and as the
    native kernel computes them.
    """
    import onnx

    return any(node.op_type == "DynamicQuantizeLinear" for node in onnx.load(model_path).graph.node)


class OnnxRuntimeSession:
    """An .onnx model loaded into ONNX Runtime in a child process."""

    backend = "onnxruntime"
    numerics = "onnxruntime"
    isa = "onnxruntime-cpu"

    def __init__(self, model, threads: int = 0):
        check_io(model)
        try:
            import onnxruntime  # noqa: F401 - fail here, with a clear message, not in the child
        except ImportError as exc:
            raise ModelFormatError(
                f"the onnxruntime backend needs the onnxruntime package ({exc}); "
                "install it with `pip install onnxruntime`"
            ) from exc
        check_natively(model)
        self.model = model
        self.threads = threads if threads > 0 else (os.cpu_count() or 1)
        self.input = model.input()
        self.output = model.output()
        self._runner = IsolatedRunner("ONNX Runtime", model.path, "edgemia.runtime.onnxruntime.load_session",
                                      (str(model.path), self.threads))

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run a batch of float32 inputs; return the raw output."""
        return self._runner(x)

    def close(self) -> None:
        self._runner.close()
