"""An OpenSSH server for tests: 127.0.0.1 only, temporary keys, stopped by the test.

The server listens on a free port of 127.0.0.1, accepts one temporary client
key for the current user, and runs every command through a login command
(sshd's ForceCommand) that puts a test directory first on PATH. Tests place
a `python3` there, or a slow `cat` to cut a transfer in the middle.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
START_ATTEMPTS = 3
START_TIMEOUT_SECONDS = 10.0


def find_sshd() -> str | None:
    found = shutil.which("sshd")
    if found:
        return found
    return next((path for path in SSHD_CANDIDATES if os.access(path, os.X_OK)), None)


def missing_tools() -> list[str]:
    """Return what a test server needs but this machine lacks, for a skip message."""
    missing = [tool for tool in ("ssh", "ssh-keygen", "ssh-keyscan") if shutil.which(tool) is None]
    if find_sshd() is None:
        missing.append("sshd (Debian: apt-get install openssh-server)")
    elif os.geteuid() == 0 and not Path("/run/sshd").is_dir():
        missing.append("/run/sshd, the directory sshd needs when started by root (mkdir -m 0755 /run/sshd)")
    return missing


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgemia-test", "-f", str(path)],
                   check=True, capture_output=True, timeout=30)


class TestServer:
    """sshd on 127.0.0.1 with keys in `directory`; `login_command` replaces the user's shell for commands."""

    __test__ = False  # not a test class, despite its name

    def __init__(self, directory: Path, login_command: str | None = None):
        self.directory = Path(directory)
        self.bin = self.directory / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        self.user = getpass.getuser()
        self.host_key = self.directory / "host_key"
        self.client_key = self.directory / "client_key"
        self.other_key = self.directory / "other_host_key"
        for key in (self.host_key, self.client_key, self.other_key):
            _keygen(key)
        (self.directory / "authorized_keys").write_text(self.client_key.with_suffix(".pub").read_text())
        self.login_command = login_command or str(self._write_default_login())
        self.process: subprocess.Popen | None = None
        self.port = 0

    def _write_default_login(self) -> Path:
        login = self.directory / "login"
        login.write_text(
            "#!/bin/sh\n"
            f'PATH="{self.bin}:$PATH"; export PATH\n'
            'exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"\n'
        )
        login.chmod(0o755)
        return login

    def add_python(self, executable: str = sys.executable) -> None:
        """Make `python3` on the server run `executable`, with the test's edgemia installed."""
        script = self.bin / "python3"
        script.write_text(f'#!/bin/sh\nexec "{executable}" "$@"\n')
        script.chmod(0o755)

    def _config(self) -> Path:
        config = self.directory / "sshd_config"
        config.write_text("\n".join([
            "ListenAddress 127.0.0.1",
            f"Port {self.port}",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.directory / 'authorized_keys'}",
            f"PidFile {self.directory / 'sshd.pid'}",
            f"AllowUsers {self.user}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "AllowAgentForwarding no",
            "PermitTunnel no",
            "PrintMotd no",
            "Subsystem sftp internal-sftp",
            f"ForceCommand {self.login_command}",
            "",
        ]))
        return config

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def start(self) -> TestServer:
        log = self.directory / "sshd.log"
        for _ in range(START_ATTEMPTS):
            self.port = _free_port()
            config = self._config()
            with open(log, "ab") as log_file:
                self.process = subprocess.Popen([find_sshd(), "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                                stdout=log_file, stderr=log_file, start_new_session=True)
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            while time.monotonic() < deadline and self.process.poll() is None:
                if self._listening():
                    return self
                time.sleep(0.1)
            self.stop()
        raise RuntimeError(f"sshd did not start on 127.0.0.1; its log:\n{log.read_text()[-2000:]}")

    def known_hosts(self, key: Path | None = None) -> Path:
        """Write a known_hosts file that holds `key` (default: the server's real host key) for this server."""
        key = key or self.host_key
        key_type, blob = key.with_suffix(".pub").read_text().split()[:2]
        path = self.directory / f"known_hosts-{key.name}"
        path.write_text(f"[127.0.0.1]:{self.port} {key_type} {blob}\n")
        return path

    def connection_arguments(self, known_hosts: Path | None = None) -> list[str]:
        """Return the `edgemia device` options that reach this server as the current user with the client key.

        `known_hosts` defaults to a file that contains the server's real host key.
        """
        return ["--host", f"{self.user}@127.0.0.1", "--port", str(self.port),
                "--known-hosts", str(known_hosts or self.known_hosts()), "--identity", str(self.client_key)]

    def fingerprint(self, key: Path | None = None) -> str:
        key = key or self.host_key
        done = subprocess.run(["ssh-keygen", "-lf", str(key.with_suffix(".pub"))], capture_output=True, text=True,
                              check=True, timeout=30)
        return done.stdout.split()[1]

    def session_pids(self) -> list[int]:
        """Return the process ids of every process below the listening sshd: its connections and their commands."""
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name in brackets may hold spaces; the parent id follows it.
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        found, frontier = [], [self.process.pid]
        while frontier:
            pid = frontier.pop()
            children = [child for child, parent in parents.items() if parent == pid]
            found += children
            frontier += children
        return found

    def kill_sessions(self) -> int:
        """Kill every open connection (the server keeps listening); return how many processes were killed."""
        pids = self.session_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def kill_sessions_when(self, condition: Callable[[], bool], timeout: float) -> threading.Thread:
        """Start a thread that kills every open connection once `condition()` is true or `timeout` seconds pass."""

        def watch():
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if condition():
                    self.kill_sessions()
                    return
                time.sleep(0.02)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        if self.process is None:
            return
        self.kill_sessions()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


def running_server(directory: Path) -> Iterator[TestServer]:
    """Start a server in `directory` whose `python3` is this interpreter, yield it and stop it.

    Skips the test when this machine lacks a tool the server needs.
    """
    import pytest

    missing = missing_tools()
    if missing:
        pytest.skip(f"the SSH tests need {', '.join(missing)}")
    server = TestServer(directory)
    server.add_python()
    server.start()
    try:
        yield server
    finally:
        server.stop()
