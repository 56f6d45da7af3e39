"""Small file helpers: checksums and atomic writes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def sha256_file(path: str | os.PathLike) -> str:
    """Return the hex SHA-256 digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_umask() -> int:
    # os.umask can only be read by setting it, so read it once, at import.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`.

    A reader never sees a partly written file: it finds the old file, the new
    one, or none. A symbolic link at `path` is followed, so its target is
    replaced and the link kept. The file gets the usual permissions (0666
    less the umask), not the private ones of a temporary file.
    """
    target = Path(path)
    if target.is_symlink():
        target = target.resolve()
    if target.exists() and not target.is_file():
        raise IsADirectoryError(f"{target} exists and is not a regular file")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_output_file(path: str | os.PathLike, option: str, inputs: tuple = ()) -> Path:
    """Check that `path` can be written as a new or replaced regular file.

    Raises InputError naming `option` when the path is empty, a directory, a
    special file, one of `inputs`, or inside something that is not a
    directory.
    """
    from edgemia.errors import InputError

    text = os.fspath(path)
    if not text:
        raise InputError(f"{option} is empty; name the file to write")
    target = Path(text)
    resolved = target.resolve()
    if resolved.is_dir():
        raise InputError(f"{option} {target}: is a directory; name a file inside it")
    if resolved.exists() and not resolved.is_file():
        raise InputError(f"{option} {target}: exists and is not a regular file; choose another path")
    for other in inputs:
        if other is not None and Path(other).exists() and resolved == Path(other).resolve():
            raise InputError(f"{option} {target}: is also an input of this command; write to another path")
    ancestor = resolved.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{option} {target}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK):
        raise InputError(f"{option} {target}: {ancestor} is not writable")
    return target


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Save arrays as an uncompressed .npz file, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
