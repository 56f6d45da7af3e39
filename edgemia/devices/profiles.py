"""Device profiles: one TOML file per kind of board.

A profile names the board's architecture and the CPU features it must
report, as Linux names them in /proc/cpuinfo. It also names the GEMM path
its kernel runs, its default thread count, the backends expected there and
how to reach it over SSH. For ARM boards it names the qemu-aarch64 CPU model
that emulates the board. The profiles shipped with edgemia are in the
repository's devices/ directory. A user's own profile is passed as a path
to its .toml file.

Profiles contain no host name, because the user passes it on each command.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from edgemia.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# GEMM paths of the native kernel, by the architecture that can run them.
ISA_ARCHITECTURES = {
    "scalar": ("aarch64", "x86_64"),
    "neon": ("aarch64",),
    "neondot": ("aarch64",),
    "avx2": ("x86_64",),
    "avx512vnni": ("x86_64",),
    "amx": ("x86_64",),
}
ARCHITECTURES = ("aarch64", "x86_64")

# A profile name becomes part of a backend name and a directory name.
_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")
_TOP_KEYS = {"description", "architecture", "cpu", "cpu_features", "isa", "threads", "backends", "connection",
             "emulation"}
_CONNECTION_KEYS = {"user", "port", "python", "remote_dir", "connect_timeout_seconds", "capture_timeout_seconds"}
_EMULATION_KEYS = {"qemu_cpu"}


@dataclass(frozen=True)
class ConnectionSettings:
    """How to reach a board over SSH and run edgemia there."""

    user: str | None = None  # None: the user that ssh picks (ssh_config, or the local user name)
    port: int = 22
    python: str = "python3"  # command that starts the board's Python, split like a shell word list
    remote_dir: str = ".cache/edgemia/device"  # working directory, relative to the login directory
    connect_timeout_seconds: float = 15.0
    capture_timeout_seconds: float = 3600.0  # limit of one capture on the board


@dataclass(frozen=True)
class DeviceProfile:
    """One kind of board, as read from its TOML file."""

    name: str
    description: str
    architecture: str  # platform.machine() on the board: aarch64 or x86_64
    cpu: str
    cpu_features: tuple[str, ...]  # features the board must report
    isa: str | None  # GEMM path the captures run; None: the one the board's kernel picks
    threads: int  # inference threads; 0 uses every core of the board
    backends: tuple[str, ...]  # backends expected on the board, in preference order
    connection: ConnectionSettings
    qemu_cpu: str | None  # qemu-aarch64 -cpu model that emulates the board; None for x86 boards
    path: Path

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "architecture": self.architecture,
            "cpu": self.cpu,
            "cpu_features": list(self.cpu_features),
            "isa": self.isa,
            "threads": self.threads,
            "backends": list(self.backends),
            "qemu_cpu": self.qemu_cpu,
        }


def profile_dirs() -> list[Path]:
    """Return the directories that contain the shipped profiles, the source checkout's first.

    A source checkout (and an editable install) has devices/ beside the
    package. A wheel installs the same files into edgemia/device_profiles,
    next to the compiled kernel.
    """
    dirs = [Path(__file__).resolve().parents[2] / "devices"]
    spec = importlib.util.find_spec("edgemia._native")
    if spec is not None and spec.origin:
        dirs.append(Path(spec.origin).parent / "device_profiles")
    return [d for d in dirs if d.is_dir() and any(d.glob("*.toml"))]


def profile_names() -> list[str]:
    """Return the names of the shipped profiles, sorted."""
    names = set()
    for directory in profile_dirs():
        names.update(path.stem for path in directory.glob("*.toml"))
    return sorted(names)


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """Load a shipped profile by name, or a profile file by its path (anything ending in .toml)."""
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text:
        path = Path(text)
        if not path.is_file():
            raise InputError(f"--device {text}: profile file not found")
        return read_profile(path)
    for directory in profile_dirs():
        path = directory / f"{text}.toml"
        if path.is_file():
            return read_profile(path)
    raise InputError(
        f"--device {text}: unknown device profile; shipped profiles: {', '.join(profile_names()) or 'none'}; "
        "or pass the path of your own .toml file"
    )


def _check_keys(source: str, table: dict, allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise InputError(f"{source}: unknown key {', '.join(unknown)}; valid keys: {', '.join(sorted(allowed))}")


def _string(source: str, table: dict, key: str, default: str | None = None, required: bool = False) -> str | None:
    value = table.get(key, default)
    if value is None:
        if required:
            raise InputError(f"{source}: '{key}' is missing")
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{source}: '{key}' must be a non-empty string, got {value!r}")
    return value


def _string_list(source: str, table: dict, key: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise InputError(f"{source}: '{key}' must be a list of names, got {value!r}")
    return tuple(value)


def _number(source: str, table: dict, key: str, default: float, low: float, high: float, integer: bool) -> float:
    value = table.get(key, default)
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
        expected = "an integer" if integer else "a number"
        raise InputError(f"{source}: '{key}' must be {expected} in {low:g}..{high:g}, got {value!r}")
    return value


def _connection(source: str, table: dict) -> ConnectionSettings:
    if not isinstance(table, dict):
        raise InputError(f"{source}: [connection] must be a table")
    _check_keys(f"{source} [connection]", table, _CONNECTION_KEYS)
    defaults = ConnectionSettings()
    remote_dir = _string(source, table, "remote_dir", defaults.remote_dir)
    if remote_dir.startswith("~"):
        raise InputError(
            f"{source}: [connection] remote_dir {remote_dir!r} starts with '~', which is not expanded; "
            "give a path relative to the login directory instead"
        )
    return ConnectionSettings(
        user=_string(source, table, "user"),
        port=int(_number(source, table, "port", defaults.port, 1, 65535, integer=True)),
        python=_string(source, table, "python", defaults.python),
        remote_dir=remote_dir,
        connect_timeout_seconds=float(_number(source, table, "connect_timeout_seconds",
                                              defaults.connect_timeout_seconds, 1, 600, integer=False)),
        capture_timeout_seconds=float(_number(source, table, "capture_timeout_seconds",
                                              defaults.capture_timeout_seconds, 1, 86400, integer=False)),
    )


def read_profile(path: Path) -> DeviceProfile:
    """Read and check one profile file; the file name without .toml is the profile's name."""
    from edgemia.runtime.capture import BACKENDS

    path = Path(path)
    source = str(path)
    name = path.name.removesuffix(".toml")
    if not _NAME_PATTERN.fullmatch(name):
        raise InputError(
            f"{source}: the profile name {name!r} must start with a lowercase letter or digit and contain "
            "only lowercase letters, digits, '.', '_' and '-'; rename the file"
        )
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{source}: cannot read the profile ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{source}: not valid TOML ({exc})") from exc
    _check_keys(source, table, _TOP_KEYS)

    architecture = _string(source, table, "architecture", required=True)
    if architecture not in ARCHITECTURES:
        raise InputError(f"{source}: architecture {architecture!r} is not one of {', '.join(ARCHITECTURES)}")
    isa = _string(source, table, "isa")
    if isa is not None and architecture not in ISA_ARCHITECTURES.get(isa, ()):
        paths = [name for name, archs in ISA_ARCHITECTURES.items() if architecture in archs]
        raise InputError(f"{source}: isa {isa!r} is not a GEMM path of {architecture}; valid: {', '.join(paths)}")
    backends = _string_list(source, table, "backends") or ("native",)
    unknown = [backend for backend in backends if backend not in BACKENDS]
    if unknown:
        raise InputError(f"{source}: unknown backend {', '.join(unknown)}; valid backends: {', '.join(BACKENDS)}")

    emulation = table.get("emulation", {})
    if not isinstance(emulation, dict):
        raise InputError(f"{source}: [emulation] must be a table")
    _check_keys(f"{source} [emulation]", emulation, _EMULATION_KEYS)
    qemu_cpu = _string(source, emulation, "qemu_cpu")
    if qemu_cpu is not None and architecture != "aarch64":
        raise InputError(f"{source}: [emulation] qemu_cpu is for aarch64 profiles, not {architecture}")

    return DeviceProfile(
        name=name,
        description=_string(source, table, "description", required=True),
        architecture=architecture,
        cpu=_string(source, table, "cpu", default="unknown"),
        cpu_features=_string_list(source, table, "cpu_features"),
        isa=isa,
        threads=int(_number(source, table, "threads", 0, 0, 1024, integer=True)),
        backends=backends,
        connection=_connection(source, table.get("connection", {})),
        qemu_cpu=qemu_cpu,
        path=path,
    )
