"""Open a local HTML report in headless Chromium and report what the page did.

Chromium runs with its network, update, sync and metrics features switched
off and every host name unresolvable, and it opens only a file:// URL. The
DevTools protocol runs over a pipe (--remote-debugging-pipe), so no port is
opened. Used by the tests and by scripts/report_screenshot.py.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgemia.errors import InputError

CHROMIUM_NAMES = ("chromium", "chromium-browser")

_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # the tests may run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--metrics-recording-only",
    "--no-pings",
    "--dns-prefetch-disable",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
    "--remote-debugging-pipe",
    "--hide-scrollbars",
)

# Returns, for every <img>, whether the browser decoded it.
_IMAGES_SCRIPT = (
    "JSON.stringify(Array.from(document.images).map(i => "
    "({alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})))"
)


@dataclass
class PageCheck:
    """Console errors (failed loads included), image states, title and screenshot of a page loaded in Chromium."""

    console_errors: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    title: str = ""
    screenshot: bytes | None = None

    @property
    def broken_images(self) -> list[dict]:
        return [image for image in self.images if not image["complete"] or image["width"] == 0]


def find_chromium() -> str | None:
    """Return the path of Debian's chromium, or None when it is not installed."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class _DevTools:
    """A DevTools protocol client over Chromium's pipe: null-terminated JSON messages on fds 3 and 4."""

    def __init__(self, process: subprocess.Popen, to_browser: int, from_browser: int, timeout: float):
        self.process = process
        self.to_browser = to_browser
        self.from_browser = from_browser
        self.deadline = time.monotonic() + timeout
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def _read_message(self) -> dict:
        while b"\0" not in self.buffer:
            if time.monotonic() > self.deadline:
                raise TimeoutError("timed out waiting for a DevTools message from Chromium")
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed the DevTools pipe (exit code {self.process.poll()})")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        request = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            request["sessionId"] = session
        os.write(self.to_browser, json.dumps(request).encode() + b"\0")
        while True:
            message = self._read_message()
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"DevTools {method} failed: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str) -> dict:
        for index, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(index)
        while True:
            message = self._read_message()
            if message.get("method") == method:
                return message
            self.events.append(message)


def _move_above(fd: int, lowest: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)
    os.close(fd)
    return moved


def check_page(html_path: Path, width: int = 1280, screenshot: bool = False, timeout: float = 60.0) -> PageCheck:
    """Load `html_path` in headless Chromium; collect console errors, image states and optionally a screenshot."""
    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise InputError(f"{html_path}: file not found")
    chromium = find_chromium()
    if chromium is None:
        raise InputError("chromium not found; install Debian's chromium package (apt-get install chromium)")

    to_read, to_browser = os.pipe()  # Chromium reads commands from fd 3
    from_browser, to_write = os.pipe()  # and writes replies to fd 4
    # Chromium's ends move to fd 10 or above, so that placing them at 3 and 4 cannot overwrite one another.
    to_read, to_write = (_move_above(fd, 10) for fd in (to_read, to_write))
    with tempfile.TemporaryDirectory() as profile:
        command = [chromium, *_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},900", "about:blank"]

        def place_pipe_ends() -> None:
            os.dup2(to_read, 3)
            os.dup2(to_write, 4)

        # close_fds=False keeps fds 3 and 4 open in the child; every other descriptor that Python
        # opens is non-inheritable (PEP 446), so nothing else leaks into Chromium.
        process = subprocess.Popen(command, close_fds=False, preexec_fn=place_pipe_ends,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_read)
        os.close(to_write)
        try:
            return _inspect(_DevTools(process, to_browser, from_browser, timeout), html_path, width, screenshot)
        finally:
            os.close(to_browser)
            os.close(from_browser)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _inspect(devtools: _DevTools, html_path: Path, width: int, screenshot: bool) -> PageCheck:
    target = devtools.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = devtools.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log"):
        devtools.call(f"{domain}.enable", session=session)
    devtools.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
    devtools.call("Page.navigate", {"url": html_path.as_uri()}, session=session)
    devtools.wait_for("Page.loadEventFired")

    check = PageCheck()
    images = devtools.call("Runtime.evaluate", {"expression": _IMAGES_SCRIPT, "returnByValue": True},
                           session=session)
    check.images = json.loads(images["result"]["value"])
    title = devtools.call("Runtime.evaluate", {"expression": "document.title", "returnByValue": True},
                          session=session)
    check.title = title["result"]["value"]
    if screenshot:
        import base64

        shot = devtools.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                             session=session)
        check.screenshot = base64.b64decode(shot["data"])

    for event in devtools.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            check.console_errors.append(" ".join(str(arg.get("value", arg.get("description")))
                                                 for arg in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            check.console_errors.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            check.console_errors.append(params["entry"].get("text", ""))
    devtools.call("Browser.close")
    return check
