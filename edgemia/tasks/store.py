"""Content keys of tasks, and the store of their verified results in a run directory."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np

import edgemia
from edgemia.util import atomic_write_json, sha256_file

logger = logging.getLogger(__name__)

STORE_DIR = "tasks"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Return the SHA-256 of edgemia's Python sources and compiled kernel.

    Any change to the code changes every task key, so a run directory never
    reuses results that other code computed.
    """
    package = Path(edgemia.__file__).parent
    digest = hashlib.sha256(edgemia.__version__.encode("utf-8"))
    files = sorted(package.rglob("*.py"))
    spec = importlib.util.find_spec("edgemia._native")
    if spec is not None and spec.origin and Path(spec.origin).is_file():
        files.append(Path(spec.origin))
    for path in files:
        digest.update(str(path.relative_to(package) if path.is_relative_to(package) else path.name).encode())
        digest.update(sha256_file(path).encode("ascii"))
    return digest.hexdigest()


def array_digest(*arrays: np.ndarray | None) -> str:
    """Return the SHA-256 of arrays' dtypes, shapes and bytes; None counts as a distinct empty value.

    Files are not hashed for keys because np.savez stamps the time into
    each .npz file, so equal records give different file bytes.
    """
    digest = hashlib.sha256()
    for array in arrays:
        if array is None:
            digest.update(b"none;")
            continue
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape};".encode("ascii"))
        digest.update(array.tobytes())
    return digest.hexdigest()


def task_key(kind: str, inputs: dict, code: str | None = None) -> str:
    """Return the content key of a task: SHA-256 of its kind, its JSON inputs and `code` (default: code_version())."""
    text = json.dumps({"kind": kind, "inputs": inputs, "code": code or code_version()}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class TaskCounts:
    """Tasks reused from the store and tasks computed, per kind of task."""

    def __init__(self) -> None:
        self.reused: Counter[str] = Counter()
        self.computed: Counter[str] = Counter()

    def to_dict(self) -> dict:
        kinds = sorted(set(self.reused) | set(self.computed))
        return {
            "reused": sum(self.reused.values()),
            "computed": sum(self.computed.values()),
            "kinds": {kind: {"reused": self.reused[kind], "computed": self.computed[kind]} for kind in kinds},
        }


class TaskStore:
    """Manifests of finished tasks, tasks/<key>.json in the run directory `out`.

    A manifest lists each file the task wrote, relative to `out`, with its
    SHA-256, and the task's result (a JSON object for the report). It is
    written last, after every file, so its presence means the task finished.
    """

    def __init__(self, out: Path):
        self.out = Path(out)
        self.directory = self.out / STORE_DIR

    def manifest_path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def verified_result(self, key: str, description: str) -> dict | None:
        """Return the stored result of task `key` if every file it wrote is unchanged, else None.

        A missing file or a file whose bytes changed is logged as a warning
        naming it, and the task must be computed again.
        """
        path = self.manifest_path(key)
        if not path.is_file():
            return None
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            files = manifest["files"]
            result = manifest["result"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("%s: unreadable task manifest of %s (%s); computing it again", path, description, exc)
            return None
        for relative, expected in files.items():
            file = self.out / relative
            if not file.is_file():
                logger.warning("%s: missing, although %s wrote it; computing %s again", file, description,
                               description)
                return None
            actual = sha256_file(file)
            if actual != expected:
                logger.warning(
                    "%s: changed since %s wrote it (sha256 %s, expected %s); computing %s again",
                    file, description, actual[:12], expected[:12], description,
                )
                return None
        return result

    def result(self, key: str) -> dict:
        """Return the stored result of a task that has just finished, without checking its files."""
        return json.loads(self.manifest_path(key).read_text(encoding="utf-8"))["result"]

    def save(self, key: str, kind: str, description: str, files: Iterable[Path], result: dict) -> None:
        """Record a finished task: the SHA-256 of each file it wrote, then its result."""
        checksums = {}
        for file in files:
            file = Path(file)
            checksums[str(file.relative_to(self.out))] = sha256_file(file)
        manifest = {
            "key": key,
            "kind": kind,
            "description": description,
            "edgemia_version": edgemia.__version__,
            "code_version": code_version(),
            "files": checksums,
            "result": result,
        }
        atomic_write_json(self.manifest_path(key), manifest)
