"""Run `edgemia capture` on a board over SSH.

`check_device` probes the board and judges it against its profile.
`BoardSession` pushes models and records to the board, runs one capture
there per model and backend, pulls each capture back and verifies its
SHA-256 before it appears under its local name.

On the board everything lives under the profile's remote_dir: models and
records under files/<sha256>/, named as on the host and reused by later
runs, and one session's captures under captures/<session>/ until they are
pulled.
"""

from __future__ import annotations

import json
import logging
import shlex
import uuid
from dataclasses import dataclass
from pathlib import Path

from edgemia.devices import probe
from edgemia.devices.check import BoardCheck, check_board
from edgemia.devices.profiles import DeviceProfile
from edgemia.devices.ssh import SshClient, SshOptions, SshTarget
from edgemia.errors import DeviceError, DeviceTimeout, InputError

logger = logging.getLogger(__name__)

# Seconds allowed for the probe. Starting Python and importing numpy under
# qemu-user on a busy 2-core x86-64 host took about 20 s.
# NOTE: not measured on a physical board; the margin is a guess.
PROBE_TIMEOUT_SECONDS = 300.0
# Transfers get a base time plus one second per MB, so they assume a link of
# at least 1 MB/s.
TRANSFER_BASE_SECONDS = 60.0
TRANSFER_SECONDS_PER_BYTE = 1e-6
# coreutils timeout exits with this status when the command ran out of time.
TIMEOUT_STATUS = 124
# Seconds the local ssh waits beyond the board's own time limit.
TIMEOUT_GRACE_SECONDS = 60.0


@dataclass
class DeviceSettings:
    """A board, its profile and how to reach it; None fields take the profile's value."""

    profile: DeviceProfile
    target: SshTarget
    ssh: SshOptions
    python: str | None = None
    remote_dir: str | None = None
    threads: int | None = None
    capture_timeout_seconds: float | None = None

    @property
    def python_command(self) -> str:
        """The board's Python command, quoted for its shell; a leading ~/ stays the login directory."""
        words = shlex.split(self.python or self.profile.connection.python)
        if not words:
            raise InputError("--python is empty; name the command that starts Python on the board")
        return " ".join(_quote_word(word) for word in words)

    @property
    def remote_root(self) -> str:
        return self.remote_dir or self.profile.connection.remote_dir

    @property
    def capture_threads(self) -> int:
        return self.profile.threads if self.threads is None else self.threads

    @property
    def capture_timeout(self) -> float:
        return self.capture_timeout_seconds or self.profile.connection.capture_timeout_seconds


def _quote_word(word: str) -> str:
    # Quoting stops the shell's tilde expansion, so ~/ becomes "$HOME"/.
    if word.startswith("~/"):
        return '"$HOME"/' + shlex.quote(word[2:])
    return shlex.quote(word)


def transfer_timeout(size: int) -> float:
    return TRANSFER_BASE_SECONDS + size * TRANSFER_SECONDS_PER_BYTE


def probe_board(client: SshClient, python_command: str) -> dict:
    """Run the probe (edgemia.devices.probe) with the board's Python and return its facts."""
    source = Path(probe.__file__).read_text(encoding="utf-8")
    output = client.check_output(f"{python_command} -", timeout=PROBE_TIMEOUT_SECONDS,
                                 what="probing the board", stdin=source.encode("utf-8"))
    lines = output.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as exc:
        raise DeviceError(
            f"the board's Python ({python_command}) printed no probe result: {output.strip()[-300:]!r}"
        ) from exc


def check_device(settings: DeviceSettings, client: SshClient) -> BoardCheck:
    """Probe the board and judge it against the profile."""
    logger.info("probing %s with %s", settings.target, settings.python_command)
    return check_board(settings.profile, probe_board(client, settings.python_command))


@dataclass(frozen=True)
class InputFile:
    """A model or records file to capture with, and its SHA-256."""

    path: Path
    sha256: str

    @property
    def remote(self) -> str:
        """Its path on the board, relative to the remote root."""
        return f"files/{self.sha256}/{self.path.name}"


class BoardSession:
    """One run of captures on a board: its inputs, its remote captures directory."""

    def __init__(self, settings: DeviceSettings, client: SshClient, check: BoardCheck):
        self.settings = settings
        self.client = client
        self.check = check
        self.root = settings.remote_root
        # This session's captures, relative to the remote root.
        self.captures_dir = f"captures/{uuid.uuid4().hex[:12]}"

    def push_inputs(self, files: list[InputFile]) -> int:
        """Copy `files` to the board, skipping those there already; return how many were copied."""
        wanted = {f"{self.root}/{file.remote}": file for file in files}
        present = self.client.remote_sha256(sorted(wanted), timeout=TRANSFER_BASE_SECONDS)
        copied = 0
        for remote, file in sorted(wanted.items()):
            if present.get(remote) == file.sha256:
                continue
            logger.info("copying %s to %s", file.path, self.client.target)
            self.client.push(file.path, remote, timeout=transfer_timeout(file.path.stat().st_size))
            copied += 1
        return copied

    def capture(self, model: InputFile, records: InputFile, backend: str, local: Path, label: str) -> None:
        """Run one capture on the board and pull it to `local`, which appears only once verified."""
        settings = self.settings
        remote_out = f"{self.captures_dir}/{uuid.uuid4().hex[:8]}-{backend}.npz"
        arguments = [
            "-m", "edgemia", "capture",
            "--model", model.remote,
            "--data", records.remote,
            "--backend", backend,
            "--threads", str(settings.capture_threads),
            "--out", remote_out,
        ]
        isa = self.check.isa if backend == "native" else None
        environment = f"EDGEMIA_ISA={shlex.quote(isa)} " if isa else ""
        limit = settings.capture_timeout
        script = (
            f"cd {shlex.quote(self.root)} && mkdir -p {shlex.quote(self.captures_dir)} && "
            f"{environment}timeout -k 10 {limit:g} {settings.python_command} "
            + " ".join(shlex.quote(argument) for argument in arguments)
            + f" && sha256sum -- {shlex.quote(remote_out)} && wc -c < {shlex.quote(remote_out)}"
        )
        what = f"the capture of {label} with {backend}"
        done = self.client.run(script, timeout=limit + TIMEOUT_GRACE_SECONDS, what=what)
        if done.returncode == TIMEOUT_STATUS:
            raise DeviceTimeout(f"{what} did not finish within {limit:g} s on {self.client.target}")
        # The last two lines are sha256sum's and wc's.
        output = done.stdout.decode("utf-8", "replace").strip().splitlines()
        digest = output[-2].split()[0] if len(output) >= 2 else ""
        size = output[-1].strip() if output else ""
        if done.returncode != 0 or len(digest) != 64 or not size.isdigit():
            message = done.stderr.decode("utf-8", "replace").strip()
            raise DeviceError(
                f"{what} failed on {self.client.target} with exit status {done.returncode}: "
                f"{message[-1500:] or 'no message'}"
            )
        self.client.pull(f"{self.root}/{remote_out}", local, digest, timeout=transfer_timeout(int(size)))

    def remove_captures(self) -> None:
        path = f"{self.root}/{self.captures_dir}"
        try:
            self.client.run(f"rm -rf -- {shlex.quote(path)}", timeout=TRANSFER_BASE_SECONDS,
                            what="removing the captures from the board")
        except DeviceError as exc:  # the captures are pulled already; a leftover only costs space
            logger.warning("could not remove %s on %s: %s", path, self.client.target, exc)
