"""The litert backend: the `ai-edge-litert` Interpreter with its default op resolver.

The default resolver applies the XNNPACK delegate, which is what the LiteRT
Python package runs on a device unless configured otherwise.
"""

from __future__ import annotations

import os

import numpy as np

from edgemia._stderr import native_stderr_to_log
from edgemia.errors import ModelFormatError
from edgemia.runtime.io import check_io
from edgemia.runtime.tflite_model import TfliteModel

# Records per invoke; the input tensor is resized to this batch.
_CHUNK = 1024


class LiteRTSession:
    """A .tflite model loaded into the LiteRT Interpreter."""

    backend = "litert"
    numerics = "litert"
    isa = "litert-default"

    def __init__(self, model: TfliteModel, threads: int = 0):
        check_io(model)
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise ModelFormatError(
                f"the litert backend needs the ai-edge-litert package ({exc}); "
                "install it with `pip install ai-edge-litert`"
            ) from exc
        self.model = model
        self.threads = threads if threads > 0 else (os.cpu_count() or 1)
        self.input = model.input()
        self.output = model.output()
        try:
            with native_stderr_to_log("LiteRT"):
                self._interpreter = Interpreter(model_path=str(model.path), num_threads=self.threads)
        except (ValueError, RuntimeError) as exc:
            raise ModelFormatError(f"{model.path}: LiteRT could not load the model ({exc})") from exc
        self._input_index = self._interpreter.get_input_details()[0]["index"]
        self._output_index = self._interpreter.get_output_details()[0]["index"]
        self._batch = 0

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            shape = [batch, *self.input.shape[1:]]
            with native_stderr_to_log("LiteRT"):
                self._interpreter.resize_tensor_input(self._input_index, shape, strict=False)
                self._interpreter.allocate_tensors()
            self._batch = batch

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run a batch of inputs already in the input tensor's dtype; return the raw output."""
        outputs = []
        for start in range(0, x.shape[0], _CHUNK):
            chunk = np.ascontiguousarray(x[start : start + _CHUNK])
            self._resize(chunk.shape[0])
            self._interpreter.set_tensor(self._input_index, chunk)
            self._interpreter.invoke()
            outputs.append(self._interpreter.get_tensor(self._output_index).copy())
        return np.concatenate(outputs, axis=0)
