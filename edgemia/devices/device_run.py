"""Capture a finished audit run's models on a board: `edgemia device run`.

The board captures each variant and model format of the run with each
backend that the board has, the profile lists and that runs the format. It
captures the target's model over the records and each perturbed copy, and
every reference model over the records. Each capture is pulled back, its SHA-256 verified, and
written into captures/<slug>/device_<name>_<backend>-<format>/ with the
`member`, `in_mask` and subgroup fields of the host's bundle.

Each capture is written as soon as it is pulled, so a time-out or a lost
connection keeps the captures finished before it, and running the same
command again captures only the missing ones.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgemia.devices.audit_run import AuditRun, CaptureJob, capture_meta, device_bundle_dir
from edgemia.devices.check import BoardCheck
from edgemia.devices.runner import BoardSession, DeviceSettings, check_device
from edgemia.devices.ssh import SshClient
from edgemia.errors import DeviceError, InputError
from edgemia.runtime.capture import BACKEND_FORMATS, load_capture, save_capture
from edgemia.util import sha256_file

logger = logging.getLogger(__name__)


@dataclass
class DeviceCaptures:
    """Counts and bundle directories of one device run, for the report."""

    check: BoardCheck
    backends: list[str]
    captured: int = 0  # captures made by this run
    reused: int = 0  # captures already in the run directory from an earlier device run
    seconds: float = 0.0
    # (variant, backend, format) -> bundle directory
    bundles: dict[tuple[str, str, str], Path] = field(default_factory=dict)


def _choose(requested: list[str] | None, available: list[str], kind: str, source: str) -> list[str]:
    if requested is None:
        return list(available)
    missing = [name for name in requested if name not in available]
    if missing:
        raise InputError(
            f"--{kind} {','.join(requested)}: {', '.join(missing)} not available {source} "
            f"(available: {', '.join(available) or 'none'})"
        )
    return list(requested)


def _finished(path: Path, job: CaptureJob, backend: str, check: BoardCheck) -> bool:
    """Whether `path` contains this job's capture from an earlier run on the same kind of board."""
    meta = capture_meta(path)
    if meta is None:
        return False
    return (
        meta.get("device", {}).get("name") == check.profile.name
        and meta.get("model_sha256") == job.model.sha256
        and meta.get("records_sha256") == job.records.sha256
        and meta.get("backend") == backend
        and meta.get("edgemia_version") == check.facts.get("edgemia_version")
        and (check.isa is None or backend != "native" or meta.get("isa") == check.isa)
    )


def _store(pulled: Path, job: CaptureJob, backend: str, run: AuditRun, settings: DeviceSettings,
           path: Path) -> None:
    """Check a pulled capture and write it into its bundle with the host bundle's fields."""
    capture, _ = load_capture(pulled)
    meta = capture.meta
    problems = []
    if meta.get("model_sha256") != job.model.sha256:
        problems.append(f"model sha256 {meta.get('model_sha256')} instead of {job.model.sha256}")
    if meta.get("backend") != backend:
        problems.append(f"backend {meta.get('backend')} instead of {backend}")
    if not np.array_equal(capture.record_id, run.record_id):
        problems.append("other records, or another order, than the host's captures")
    if problems:
        raise DeviceError(f"the capture of {job.label} pulled from the board has {'; '.join(problems)}")
    meta["variant"] = job.variant
    meta["records_sha256"] = job.records.sha256
    meta["device"] = {
        "name": settings.profile.name,
        "target": str(settings.target),
        "capture_sha256": sha256_file(pulled),
    }
    fields = run.fields
    if job.file_name == "target.npz":
        save_capture(path, capture, member=fields.member, groups=fields.groups)
    elif job.k is not None:
        save_capture(path, capture, in_mask=fields.in_mask[job.k])
    else:
        save_capture(path, capture)


def capture_on_device(
    settings: DeviceSettings,
    run: AuditRun,
    variants: list[str] | None = None,
    backends: list[str] | None = None,
    progress: Callable[[int], Callable[[], None]] = lambda total: (lambda: None),
) -> DeviceCaptures:
    """Capture every model of `run` on the board with each backend; see the module docstring.

    `progress(total)` is called once with the number of captures to make and
    returns a function called after each one. Raises InputError when the
    board does not match its profile, and DeviceError (or a subclass) when
    the board cannot be reached or a capture fails there.
    """
    start = time.perf_counter()
    with SshClient(settings.target, settings.ssh) as client:
        check = check_device(settings, client)
        if not check.ok:
            raise InputError(
                f"{settings.target} does not match device profile {settings.profile.name}: "
                + "; ".join(check.problems)
            )
        for note in check.notes:
            logger.warning("%s: %s", settings.target, note)
        chosen_variants = _choose(variants, run.variants, "variants", "in the run")
        chosen_backends = _choose(backends, check.backends, "backends", "on the board and in the profile")
        result = DeviceCaptures(check=check, backends=[])

        planned: list[tuple[CaptureJob, str, Path]] = []
        for backend in chosen_backends:
            for (variant, model_format), (slug, jobs) in run.jobs.items():
                if variant not in chosen_variants or model_format not in BACKEND_FORMATS[backend]:
                    continue
                if backend not in result.backends:
                    result.backends.append(backend)
                bundle = device_bundle_dir(run.out, slug, settings.profile.name, backend, model_format)
                result.bundles[variant, backend, model_format] = bundle
                planned += [(job, backend, bundle / job.file_name) for job in jobs]
        pending = [(job, backend, path) for job, backend, path in planned if not _finished(path, job, backend, check)]
        result.reused = len(planned) - len(pending)
        if result.reused:
            logger.info("%d captures are in the run directory already; capturing the other %d",
                        result.reused, len(pending))

        advance = progress(len(pending))
        if pending:
            session = BoardSession(settings, client, check)
            inputs = {job.model.path: job.model for job, _, _ in pending}
            inputs.update({job.records.path: job.records for job, _, _ in pending})
            session.push_inputs(list(inputs.values()))
            with tempfile.TemporaryDirectory(prefix="edgemia-device-") as scratch:
                try:
                    for index, (job, backend, path) in enumerate(pending):
                        pulled = Path(scratch) / f"{index}.npz"
                        session.capture(job.model, job.records, backend, pulled, job.label)
                        _store(pulled, job, backend, run, settings, path)
                        result.captured += 1
                        advance()
                except DeviceError as exc:
                    raise type(exc)(
                        f"{exc}. The {result.captured + result.reused} captures finished so far are kept in "
                        f"{run.out / 'captures'}; run the same command again to capture the other "
                        f"{len(pending) - result.captured}"
                    ) from exc
            session.remove_captures()
    result.seconds = time.perf_counter() - start
    return result
