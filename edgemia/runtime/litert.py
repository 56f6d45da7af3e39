"""The litert backend: the `ai-edge-litert` Interpreter with its default op resolver.

The default resolver applies the XNNPACK delegate, which is what the LiteRT
Python package runs on a device unless configured otherwise. The
interpreter runs in a child process (see edgemia.runtime.isolated) and sees a
model only after the native loader's checks pass.
"""

from __future__ import annotations

import os

import numpy as np

from edgemia.errors import ModelFormatError, UnsupportedModelError
from edgemia.runtime.io import check_io
from edgemia.runtime.isolated import IsolatedRunner
from edgemia.runtime.tflite_model import TfliteModel

# Records per invoke; the input tensor is resized to this batch.
_CHUNK = 1024


def load_interpreter(model_path: str, threads: int):
    """Build a function that runs batches on a LiteRT Interpreter; called in the child process."""
    from ai_edge_litert.interpreter import Interpreter

    from edgemia._stderr import native_stderr_to_log

    with native_stderr_to_log("LiteRT"):
        interpreter = Interpreter(model_path=model_path, num_threads=threads)
    details = interpreter.get_input_details()[0]
    input_index, input_shape = details["index"], list(details["shape"])
    output_index = interpreter.get_output_details()[0]["index"]
    state = {"batch": 0}

    def run(x: np.ndarray) -> np.ndarray:
        outputs = []
        for start in range(0, x.shape[0], _CHUNK):
            chunk = np.ascontiguousarray(x[start : start + _CHUNK])
            if chunk.shape[0] != state["batch"]:
                with native_stderr_to_log("LiteRT"):
                    interpreter.resize_tensor_input(input_index, [chunk.shape[0], *input_shape[1:]], strict=False)
                    interpreter.allocate_tensors()
                state["batch"] = chunk.shape[0]
            interpreter.set_tensor(input_index, chunk)
            interpreter.invoke()
            outputs.append(interpreter.get_tensor(output_index).copy())
        return np.concatenate(outputs, axis=0)

    return run


def check_natively(model) -> None:
    """Run the native loader's checks, so that a corrupt model never reaches a third-party runtime.

    A valid model that the native kernel does not run passes.
    """
    from edgemia.runtime.native import NativeKernelMissing, NativeSession

    try:
        NativeSession(model, threads=1).close()
    except (UnsupportedModelError, NativeKernelMissing):
        pass


class LiteRTSession:
    """A .tflite model loaded into the LiteRT Interpreter in a child process."""

    backend = "litert"
    numerics = "litert"
    isa = "litert-default"

    def __init__(self, model: TfliteModel, threads: int = 0):
        check_io(model)
        try:
            import ai_edge_litert  # noqa: F401 - fail here, with a clear message, not in the child
        except ImportError as exc:
            raise ModelFormatError(
                f"the litert backend needs the ai-edge-litert package ({exc}); "
                "install it with `pip install ai-edge-litert`"
            ) from exc
        check_natively(model)
        self.model = model
        self.threads = threads if threads > 0 else (os.cpu_count() or 1)
        self.input = model.input()
        self.output = model.output()
        self._runner = IsolatedRunner("LiteRT", model.path, "edgemia.runtime.litert.load_interpreter",
                                      (str(model.path), self.threads))

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run a batch of inputs already in the input tensor's dtype; return the raw output."""
        return self._runner(x)

    def close(self) -> None:
        self._runner.close()
