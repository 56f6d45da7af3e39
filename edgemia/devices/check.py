"""Compare a board's probe (edgemia.devices.probe) with its device profile.

A problem stops `edgemia device run`: another architecture, a missing CPU
feature, a Python, numpy or edgemia that is missing or too old, a kernel that
does not load, or no backend in common with the profile. A note is a
difference that captures can live with, such as a CPU feature the profile does
not list, or a backend the profile expects but the board lacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import edgemia
from edgemia.devices.profiles import DeviceProfile
from edgemia.runtime.capture import BACKENDS

_MACHINE_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "AMD64": "x86_64"}
MIN_PYTHON = (3, 10)


@dataclass
class BoardCheck:
    """A board's facts, judged against a profile."""

    profile: DeviceProfile
    facts: dict  # the probe's output
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    isa: str | None = None  # GEMM path the captures run
    backends: list[str] = field(default_factory=list)  # backends both the profile and the board have

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {
            "profile": self.profile.to_dict(),
            "board": self.facts,
            "isa": self.isa,
            "backends": self.backends,
            "problems": self.problems,
            "notes": self.notes,
        }


def _python_version(text: str | None) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in (text or "").split(".")[:2])
    except ValueError:
        return ()


def check_board(profile: DeviceProfile, facts: dict) -> BoardCheck:
    """Judge the probe output `facts` against `profile`."""
    check = BoardCheck(profile=profile, facts=facts)
    problems, notes = check.problems, check.notes

    machine = _MACHINE_ALIASES.get(facts.get("machine"), facts.get("machine"))
    if machine != profile.architecture:
        problems.append(
            f"the board is {machine}, but profile {profile.name} describes {profile.architecture}"
        )

    python = facts.get("python")
    if _python_version(python) < MIN_PYTHON:
        problems.append(
            f"the board's Python is {python}; edgemia needs {'.'.join(map(str, MIN_PYTHON))} or newer"
        )
    if facts.get("numpy_version") is None:
        problems.append(f"numpy does not import on the board ({facts.get('numpy_error')})")

    version = facts.get("edgemia_version")
    if version is None:
        problems.append(
            f"edgemia does not import on the board ({facts.get('edgemia_error')}); install it there "
            f"with: pip install 'edgemia[device]=={edgemia.__version__}'"
        )
    elif version != edgemia.__version__:
        problems.append(
            f"the board has edgemia {version}, this host {edgemia.__version__}; install the same "
            "version on both, because each version's kernel may round differently"
        )
    elif facts.get("native_error"):
        problems.append(f"edgemia's native kernel does not load on the board ({facts['native_error']})")

    features = set(facts.get("cpu_features") or [])
    missing = [feature for feature in profile.cpu_features if feature not in features]
    if missing:
        problems.append(
            f"the board's CPU lacks {', '.join(missing)}, which profile {profile.name} ({profile.cpu}) "
            "requires; choose the profile of this board"
        )

    isas = facts.get("isas") or []
    default_isa = facts.get("default_isa")
    if profile.isa is None:
        check.isa = default_isa
    elif isas and profile.isa not in isas:
        problems.append(
            f"the board's kernel cannot run the {profile.isa} path of profile {profile.name} "
            f"(available: {', '.join(isas)})"
        )
    else:
        check.isa = profile.isa
        if default_isa and default_isa != profile.isa:
            notes.append(
                f"the board's kernel would pick {default_isa}; captures run {profile.isa}, the path of "
                f"profile {profile.name}"
            )

    available = facts.get("backends") or []
    check.backends = [backend for backend in profile.backends if backend in available]
    for backend in profile.backends:
        if backend not in available and backend != "native":
            notes.append(f"backend {backend} is not installed on the board; its captures are skipped")
    unexpected = [b for b in available if b not in profile.backends and b in BACKENDS]
    if unexpected:
        notes.append(f"the board also has {', '.join(unexpected)}, which profile {profile.name} does not list")
    if not check.backends and not problems:
        problems.append(
            f"the board has none of the backends of profile {profile.name} ({', '.join(profile.backends)})"
        )
    return check
