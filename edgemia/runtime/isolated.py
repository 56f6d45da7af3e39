"""Run a third-party runtime in a child process.

LiteRT and ONNX Runtime check far less of a model file than edgemia does, and
a corrupt file can make them crash the process or loop forever. The runtime
therefore lives in a child process: a crash or a time-out there becomes a
ModelFormatError here, and the caller's process survives.
"""

from __future__ import annotations

import importlib
import multiprocessing
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from edgemia.errors import ModelFormatError

# Seconds the child may take to load the model, and per run request.
LOAD_TIMEOUT_SECONDS = 120.0
RUN_TIMEOUT_SECONDS = 600.0


def _serve(connection, factory: str, arguments: tuple) -> None:
    """Load a runner with `factory` in the child, then serve run requests until a None request arrives."""
    try:
        module_name, function_name = factory.rsplit(".", 1)
        runner = getattr(importlib.import_module(module_name), function_name)(*arguments)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        connection.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    connection.send(("ready", None))
    while True:
        request = connection.recv()
        if request is None:
            return
        try:
            connection.send(("output", runner(request)))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
            connection.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=2)}"))


class IsolatedRunner:
    """A model loaded by `factory(*arguments)` in a child process; call it with input batches.

    `factory` is a dotted path to a function that returns a callable mapping
    an input batch to the raw output batch.
    """

    def __init__(self, runtime: str, model_path: Path, factory: str, arguments: tuple):
        self._runtime = runtime
        self._model_path = model_path
        self._process = None
        context = multiprocessing.get_context("spawn")
        self._connection, child_end = context.Pipe()
        self._process = context.Process(target=_serve, args=(child_end, factory, arguments), daemon=True)
        self._process.start()
        child_end.close()
        status, detail = self._receive(LOAD_TIMEOUT_SECONDS, "loading the model")
        if status == "error":
            self.close()
            raise ModelFormatError(f"{model_path}: {runtime} could not load the model ({detail})")

    def _receive(self, timeout: float, activity: str) -> tuple[str, Any]:
        if not self._connection.poll(timeout):
            self.close()
            raise ModelFormatError(
                f"{self._model_path}: {self._runtime} did not finish {activity} within {timeout:.0f} s; "
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
                f"{self._model_path}: {self._runtime} crashed ({reason}) while {activity}; the model file "
                "is likely corrupt"
            ) from None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self._process is None:
            raise RuntimeError(f"the {self._runtime} session is closed")
        self._connection.send(np.ascontiguousarray(x))
        status, payload = self._receive(RUN_TIMEOUT_SECONDS, "running the model")
        if status == "error":
            first_line = payload.splitlines()[0]
            raise ModelFormatError(f"{self._model_path}: {self._runtime} could not run the model ({first_line})")
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
