"""Commands and file transfers on a board, through the OpenSSH client.

Every call starts `ssh` with BatchMode (no password prompts) and
StrictHostKeyChecking=yes. The board's host key must therefore already be in
known_hosts (the user's files, or the one given), or match the one SHA256
fingerprint given. With a fingerprint, ssh-keyscan fetches the keys the
board offers. Only the key with that fingerprint is written to a private
known_hosts file, which ssh then checks against.

Transfers never leave a file that looks complete but is not. A push writes
to a hidden temporary name on the board and renames it only after its
SHA-256 matches. A pull writes to a temporary file here, checks the SHA-256
the board reported, and only then renames it. The board's shell must be POSIX sh with
`cat`, `mkdir`, `mv`, `rm` and `sha256sum`, as Linux distributions and BusyBox
provide.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from edgemia.errors import DeviceConnectionError, DeviceError, DeviceTimeout, HostKeyError, InputError
from edgemia.util import sha256_file

logger = logging.getLogger(__name__)

_HOST_PATTERN = re.compile(r"[A-Za-z0-9_.:%-]+")
_USER_PATTERN = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*")
_FINGERPRINT_PATTERN = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
# ssh exits with 255 when it fails itself, rather than the remote command.
SSH_FAILED = 255
# Seconds between keep-alive messages, and how many may go unanswered before
# ssh declares the connection lost.
KEEPALIVE_SECONDS = 10
KEEPALIVE_COUNT = 3
# The name the pinned host key is stored under in the private known_hosts file.
PINNED_ALIAS = "edgemia-pinned-host"
_HOST_KEY_MESSAGES = ("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED",
                      "No matching host key", "host key for", "Host key for")
_CONNECT_MESSAGES = ("Connection refused", "Connection timed out", "Could not resolve", "No route to host",
                     "Network is unreachable", "Permission denied", "Operation timed out",
                     "kex_exchange_identification", "Connection closed by")


@dataclass(frozen=True)
class SshTarget:
    """Where a board is: host, optional user and port."""

    host: str
    user: str | None = None
    port: int = 22

    @classmethod
    def parse(cls, text: str, port: int, default_user: str | None = None) -> SshTarget:
        """Parse `[USER@]HOST`; an IPv6 address may be given in brackets."""
        user, at, host = text.rpartition("@")
        user = user if at else default_user
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not host or host.startswith("-") or not _HOST_PATTERN.fullmatch(host):
            raise InputError(f"--host {text!r}: not a host name or address; expected [USER@]HOST")
        if user is not None and not _USER_PATTERN.fullmatch(user):
            raise InputError(f"--host {text!r}: {user!r} is not a valid user name")
        if not 1 <= port <= 65535:
            raise InputError(f"--port {port}: outside 1..65535")
        return cls(host=host, user=user, port=port)

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user + '@' if self.user else ''}{host}:{self.port}"


@dataclass(frozen=True)
class SshOptions:
    """How ssh authenticates the board and the user."""

    known_hosts: Path | None = None  # check host keys against this file only
    host_key_fingerprint: str | None = None  # accept only the host key with this SHA256 fingerprint
    identity: Path | None = None  # private key file (ssh -i)
    config: Path | None = None  # ssh_config file (ssh -F); None reads the user's and the system's
    extra: tuple[str, ...] = field(default=())  # more `-o KEY=VALUE` options
    connect_timeout_seconds: float = 15.0

    def __post_init__(self) -> None:
        fingerprint = self.host_key_fingerprint
        if fingerprint is not None and not _FINGERPRINT_PATTERN.fullmatch(fingerprint):
            raise InputError(
                f"--host-key-fingerprint {fingerprint!r}: expected SHA256: and 43 base64 characters, as "
                "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints on the board"
            )
        if fingerprint is not None and self.known_hosts is not None:
            raise InputError("--known-hosts and --host-key-fingerprint exclude each other; give one")
        for option in self.extra:
            if "=" not in option or option.startswith("-"):
                raise InputError(f"--ssh-option {option!r}: expected KEY=VALUE, as for ssh -o")


def key_fingerprint(key_base64: str) -> str:
    """Return OpenSSH's SHA256 fingerprint of a public key given as its base64 blob."""
    digest = hashlib.sha256(base64.b64decode(key_base64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _host_key_algorithms(key_type: str) -> list[str]:
    # An RSA key signs with SHA-2 in current OpenSSH; the key type alone is the SHA-1 algorithm.
    return ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if key_type == "ssh-rsa" else [key_type]


def _last_lines(data: bytes | str | None, count: int = 3) -> str:
    if data is None:
        return ""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-count:])


class SshClient:
    """Runs commands on one board over ssh; use it as a context manager."""

    def __init__(self, target: SshTarget, options: SshOptions):
        if shutil.which("ssh") is None:
            raise DeviceError("the OpenSSH client `ssh` is not installed here (Debian: apt-get install "
                              "openssh-client)")
        self.target = target
        self.options = options
        self._private_dir: Path | None = None
        self._pinned: tuple[Path, list[str]] | None = None

    def __enter__(self) -> SshClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None

    # Host keys.

    def _pin_host_key(self) -> tuple[Path, list[str]]:
        """Fetch the board's host keys and keep the one with the given fingerprint."""
        if self._pinned is not None:
            return self._pinned
        if shutil.which("ssh-keyscan") is None:
            raise DeviceError("--host-key-fingerprint needs ssh-keyscan, which is not installed here")
        timeout = self.options.connect_timeout_seconds
        command = ["ssh-keyscan", "-p", str(self.target.port), "-T", str(max(1, int(timeout))), self.target.host]
        try:
            done = subprocess.run(command, capture_output=True, timeout=timeout + 10, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise DeviceTimeout(f"fetching the host keys of {self.target} timed out") from exc
        wanted = self.options.host_key_fingerprint
        offered, kept = [], []
        for line in done.stdout.decode("utf-8", "replace").splitlines():
            parts = line.split()
            if len(parts) < 3 or line.startswith("#"):
                continue
            key_type, blob = parts[1], parts[2]
            try:
                fingerprint = key_fingerprint(blob)
            except ValueError:
                continue
            offered.append(f"{key_type} {fingerprint}")
            if fingerprint == wanted:
                kept.append((key_type, blob))
        if not offered:
            raise DeviceConnectionError(
                f"could not fetch the host keys of {self.target} with ssh-keyscan "
                f"({_last_lines(done.stderr) or 'no answer'})"
            )
        if not kept:
            raise HostKeyError(
                f"{self.target} offers no host key with fingerprint {wanted} (it offers: {'; '.join(offered)}); "
                "the host may not be the board you meant. Check the fingerprint on the board with "
                "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`"
            )
        self._private_dir = Path(tempfile.mkdtemp(prefix="edgemia-ssh-"))
        known_hosts = self._private_dir / "known_hosts"
        known_hosts.write_text("".join(f"{PINNED_ALIAS} {key_type} {blob}\n" for key_type, blob in kept))
        algorithms = [name for key_type, _ in kept for name in _host_key_algorithms(key_type)]
        self._pinned = (known_hosts, algorithms)
        return self._pinned

    # Commands.

    def ssh_command(self, remote_command: str) -> list[str]:
        """Return the ssh argument list that runs `remote_command` on the board."""
        options = self.options
        command = ["ssh", "-T", "-p", str(self.target.port)]
        if options.config is not None:
            command += ["-F", str(options.config)]
        if options.identity is not None:
            command += ["-i", str(options.identity), "-o", "IdentitiesOnly=yes"]
        settings = [
            "BatchMode=yes",
            "StrictHostKeyChecking=yes",
            f"ConnectTimeout={max(1, int(options.connect_timeout_seconds))}",
            f"ServerAliveInterval={KEEPALIVE_SECONDS}",
            f"ServerAliveCountMax={KEEPALIVE_COUNT}",
        ]
        if options.host_key_fingerprint is not None:
            known_hosts, algorithms = self._pin_host_key()
            settings += [f"UserKnownHostsFile={known_hosts}", "GlobalKnownHostsFile=/dev/null",
                         f"HostKeyAlias={PINNED_ALIAS}", f"HostKeyAlgorithms={','.join(algorithms)}"]
        elif options.known_hosts is not None:
            settings += [f"UserKnownHostsFile={options.known_hosts}", "GlobalKnownHostsFile=/dev/null"]
        settings += list(options.extra)
        for setting in settings:
            command += ["-o", setting]
        return command + ["--", self.target.destination, remote_command]

    def run(
        self,
        remote_command: str,
        timeout: float,
        what: str,
        stdin: bytes | IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
    ) -> subprocess.CompletedProcess:
        """Run `remote_command` in the board's login shell and return the finished process.

        `what` names the step in error messages. Raises HostKeyError,
        DeviceConnectionError (not connected, or the connection was lost) or
        DeviceTimeout; the remote command's own exit status is left to the
        caller in `returncode`. With `stdout` the output goes to that file.
        """
        command = self.ssh_command(remote_command)
        logger.debug("ssh %s: %s", self.target, remote_command)
        input_bytes = stdin if isinstance(stdin, bytes) else None
        stdin_stream = None if isinstance(stdin, bytes) else (stdin if stdin is not None else subprocess.DEVNULL)
        try:
            done = subprocess.run(
                command, input=input_bytes, stdin=stdin_stream, timeout=timeout,
                stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE,
            )
        except subprocess.TimeoutExpired as exc:
            logger.error("ssh %s: %s timed out after %g s", self.target, what, timeout)
            raise DeviceTimeout(
                f"{what} on {self.target} did not finish within {timeout:g} s; the connection may be "
                "stalled or the board overloaded"
            ) from exc
        if done.returncode == SSH_FAILED:
            raise self._connection_error(done.stderr, what)
        return done

    def _connection_error(self, stderr: bytes, what: str) -> DeviceError:
        message = _last_lines(stderr)
        logger.error("ssh %s: %s failed: %s", self.target, what, message)
        if any(text in message for text in _HOST_KEY_MESSAGES):
            return HostKeyError(
                f"the host key of {self.target} could not be verified ({message}). If this is the board "
                "you meant, add its key to known_hosts after comparing its fingerprint with the one "
                "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints on the board, or pass that "
                "fingerprint with --host-key-fingerprint"
            )
        if any(text in message for text in _CONNECT_MESSAGES) and "closed by remote host" not in message:
            return DeviceConnectionError(f"could not connect to {self.target} for {what} ({message})")
        return DeviceConnectionError(
            f"lost the connection to {self.target} during {what} ({message or 'ssh exited with status 255'})"
        )

    def check_output(self, remote_command: str, timeout: float, what: str, stdin: bytes | None = None) -> str:
        """Run `remote_command`; return its stdout, or raise DeviceError if it exits with non-zero status."""
        done = self.run(remote_command, timeout=timeout, what=what, stdin=stdin)
        if done.returncode != 0:
            raise DeviceError(
                f"{what} failed on {self.target} with exit status {done.returncode}: "
                f"{_last_lines(done.stderr, 6) or _last_lines(done.stdout, 6) or 'no message'}"
            )
        return done.stdout.decode("utf-8", "replace")

    # Files.

    def push(self, local: Path, remote: str, timeout: float) -> None:
        """Copy the file `local` to the path `remote` on the board (relative to the login directory)."""
        local = Path(local)
        digest = sha256_file(local)
        target = PurePosixPath(remote)
        directory = shlex.quote(str(target.parent))
        # $$, the remote shell's process id, keeps two concurrent pushes apart.
        script = (
            f"mkdir -p {directory} && "
            f"tmp={directory}/.{shlex.quote(target.name)}.$$.partial && "
            'cat > "$tmp" && '
            f'if [ "$(sha256sum < "$tmp" | cut -c1-64)" = {digest} ]; '
            f'then mv -f "$tmp" {shlex.quote(str(target))}; '
            'else rm -f "$tmp"; echo "checksum mismatch after transfer" >&2; exit 65; fi'
        )
        with open(local, "rb") as f:
            done = self.run(script, timeout=timeout, what=f"copying {local.name} to the board", stdin=f)
        if done.returncode != 0:
            raise DeviceError(
                f"copying {local} to {remote} on {self.target} failed with exit status {done.returncode}: "
                f"{_last_lines(done.stderr) or 'no message'}"
            )

    def remote_sha256(self, paths: list[str], timeout: float) -> dict[str, str]:
        """Return the SHA-256 of each of `paths` that exists on the board."""
        if not paths:
            return {}
        quoted = " ".join(shlex.quote(path) for path in paths)
        script = f"for f in {quoted}; do if [ -f \"$f\" ]; then sha256sum -- \"$f\"; fi; done"
        output = self.check_output(script, timeout=timeout, what="checking files on the board")
        digests = {}
        for line in output.splitlines():
            digest, _, name = line.partition("  ")
            if len(digest) == 64 and name:
                digests[name] = digest
        return digests

    def pull(self, remote: str, local: Path, expected_sha256: str, timeout: float) -> None:
        """Copy the board's file `remote` to `local`, which appears only if its SHA-256 matches."""
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, partial_name = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.", suffix=".partial")
        partial = Path(partial_name)
        try:
            with os.fdopen(fd, "wb") as f:
                done = self.run(f"cat -- {shlex.quote(remote)}", timeout=timeout,
                                what=f"copying {PurePosixPath(remote).name} from the board", stdout=f)
            if done.returncode != 0:
                raise DeviceError(
                    f"copying {remote} from {self.target} failed with exit status {done.returncode}: "
                    f"{_last_lines(done.stderr) or 'no message'}"
                )
            digest = sha256_file(partial)
            if digest != expected_sha256:
                raise DeviceError(
                    f"{remote} from {self.target} arrived with SHA-256 {digest}, but the board reported "
                    f"{expected_sha256}; the transfer was corrupted or the file changed, run the command again"
                )
            os.replace(partial, local)
        finally:
            partial.unlink(missing_ok=True)
