"""The litert backend: the `ai-edge-litert` Interpreter with its default op resolver.

The default resolver applies the XNNPACK delegate, which is what the LiteRT
Python package runs on a device unless configured otherwise.

LiteRT checks far less of a model file than edgemia does, and a corrupt file
can make it crash the process or loop forever. The interpreter therefore runs
in a child process: a crash or a time-out there becomes a ModelFormatError
here, and the caller's process survives.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback
from typing import Any

import numpy as np

from edgemia.errors import ModelFormatError, UnsupportedModelError
from edgemia.runtime.io import check_io
from edgemia.runtime.tflite_model import TfliteModel

# Records per invoke; the input tensor is resized to this batch.
_CHUNK = 1024

# Seconds the child may take to load the model, and per chunk of records.
LOAD_TIMEOUT_SECONDS = 120.0
CHUNK_TIMEOUT_SECONDS = 120.0


def _serve(connection, model_path: str, threads: int) -> None:
    """Load the model in the child process, then serve run requests until a None request arrives."""
    from edgemia._stderr import native_stderr_to_log

    try:
        from ai_edge_litert.interpreter import Interpreter

        with native_stderr_to_log("LiteRT"):
            interpreter = Interpreter(model_path=model_path, num_threads=threads)
        input_index = interpreter.get_input_details()[0]["index"]
        output_index = interpreter.get_output_details()[0]["index"]
        input_shape = list(interpreter.get_input_details()[0]["shape"])
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        connection.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    connection.send(("ready", None))
    batch = 0
    while True:
        request = connection.recv()
        if request is None:
            return
        try:
            outputs = []
            for start in range(0, request.shape[0], _CHUNK):
                chunk = np.ascontiguousarray(request[start : start + _CHUNK])
                if chunk.shape[0] != batch:
                    with native_stderr_to_log("LiteRT"):
                        interpreter.resize_tensor_input(input_index, [chunk.shape[0], *input_shape[1:]], strict=False)
                        interpreter.allocate_tensors()
                    batch = chunk.shape[0]
                interpreter.set_tensor(input_index, chunk)
                interpreter.invoke()
                outputs.append(interpreter.get_tensor(output_index).copy())
            connection.send(("output", np.concatenate(outputs, axis=0)))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
            connection.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=2)}"))


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
        # The native backend's load-time checks run first, so that a corrupt
        # model is rejected before LiteRT reads it. A valid model the native
        # kernel does not run still goes to LiteRT.
        from edgemia.runtime.native import NativeKernelMissing, NativeSession

        try:
            NativeSession(model, threads=1).close()
        except (UnsupportedModelError, NativeKernelMissing):
            pass
        self._process = None
        self.model = model
        self.threads = threads if threads > 0 else (os.cpu_count() or 1)
        self.input = model.input()
        self.output = model.output()
        context = multiprocessing.get_context("spawn")
        self._connection, child_end = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child_end, str(model.path), self.threads), daemon=True
        )
        self._process.start()
        child_end.close()
        status, detail = self._receive(LOAD_TIMEOUT_SECONDS, "loading the model")
        if status == "error":
            self.close()
            raise ModelFormatError(f"{model.path}: LiteRT could not load the model ({detail})")

    def _receive(self, timeout: float, activity: str) -> tuple[str, Any]:
        if not self._connection.poll(timeout):
            self.close()
            raise ModelFormatError(
                f"{self.model.path}: LiteRT did not finish {activity} within {timeout:.0f} s; "
                "the model file may be corrupt"
            )
        try:
            return self._connection.recv()
        except EOFError:
            self._process.join(timeout=5)
            code = self._process.exitcode
            reason = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            self.close()
            raise ModelFormatError(
                f"{self.model.path}: LiteRT crashed ({reason}) while {activity}; the model file "
                "is likely corrupt (the native backend's checks name the first problem they find)"
            ) from None

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run a batch of inputs already in the input tensor's dtype; return the raw output."""
        if self._process is None:
            raise RuntimeError("the LiteRT session is closed")
        self._connection.send(np.ascontiguousarray(x))
        chunks = max(1, -(-x.shape[0] // _CHUNK))
        status, payload = self._receive(CHUNK_TIMEOUT_SECONDS * chunks, "running the model")
        if status == "error":
            raise ModelFormatError(f"{self.model.path}: LiteRT could not run the model ({payload.splitlines()[0]})")
        return payload

    def close(self) -> None:
        if self._process is None:
            return
        try:
            self._connection.send(None)
        except (BrokenPipeError, OSError):
            pass
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._connection.close()
        self._process = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass
