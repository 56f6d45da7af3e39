"""The finished audit run that a device run captures again on a board.

A device run reads the run directory that `edgemia audit` wrote. It takes
the variants, their files per format and their sha256 from report.json, and
the records and their perturbed copies from data/. From the host capture
bundle of each variant and format it takes the `member`, `in_mask` and
subgroup fields that the device's bundles must carry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgemia.attacks.bundle import TARGET_FILE, load_bundle, perturbed_file_name, reference_file_name
from edgemia.devices.runner import InputFile
from edgemia.errors import InputError
from edgemia.references import capture_dir
from edgemia.runtime.capture import load_capture
from edgemia.util import sha256_file

DEVICE_BACKEND_PREFIX = "device:"


def device_backend_name(device: str, backend: str) -> str:
    """Return the report's backend name of a device capture, `device:<device>:<backend>`."""
    return f"{DEVICE_BACKEND_PREFIX}{device}:{backend}"


def device_bundle_dir(out: Path, slug: str, device: str, backend: str, model_format: str) -> Path:
    """Return a device bundle's directory, captures/<slug>/device_<device>_<backend>-<format>.

    The directory name avoids ':', as variant slugs do.
    """
    return capture_dir(out, slug, f"device_{device}_{backend}", model_format)


def is_device_backend(name: str) -> bool:
    return name.startswith(DEVICE_BACKEND_PREFIX)


@dataclass(frozen=True)
class CaptureJob:
    """One capture file of a device bundle: a model over a records file."""

    variant: str
    slug: str
    model_format: str
    model: InputFile
    records: InputFile
    file_name: str  # target.npz, reference-<k>.npz or perturbed-<j>.npz
    k: int | None = None  # the reference model, for reference-<k>.npz

    @property
    def label(self) -> str:
        return f"{self.variant} ({self.model_format}) {self.file_name.removesuffix('.npz')}"


@dataclass
class HostBundleFields:
    """The fields a device bundle copies from the host's bundle of the same variant and format."""

    member: np.ndarray  # bool [n]
    in_mask: np.ndarray  # bool [K, n]
    groups: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class AuditRun:
    """The parts of a finished audit run directory that a device run reads."""

    out: Path
    report: dict
    record_id: np.ndarray  # [n], the order of every capture
    fields: HostBundleFields
    # (variant, format) -> the variant's slug and every capture job of its bundle
    jobs: dict[tuple[str, str], tuple[str, list[CaptureJob]]]

    @property
    def variants(self) -> list[str]:
        return list(dict.fromkeys(variant for variant, _ in self.jobs))

    def host_backends(self, model_format: str) -> list[str]:
        """Return the host backends that captured files of `model_format`."""
        return list(dict.fromkeys(
            row["backend"] for row in self.report["variants"]
            if row.get("format") == model_format and not is_device_backend(row["backend"])
        ))


def _checked_file(out: Path, path_text: str, expected_sha256: str, what: str) -> InputFile:
    path = out / path_text
    if not path.is_file():
        raise InputError(f"{path}: {what} not found; the run directory is incomplete, run the audit again")
    digest = sha256_file(path)
    if digest != expected_sha256:
        raise InputError(
            f"{path}: {what} has sha256 {digest}, but report.json records {expected_sha256}; the file "
            "changed after the audit, so run the audit again"
        )
    return InputFile(path, digest)


def _read_report(out: Path) -> dict:
    report_path = out / "report.json"
    if not report_path.is_file():
        raise InputError(
            f"{out}: report.json not found; a device run needs a finished audit run directory "
            "(edgemia audit --out DIR)"
        )
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{report_path}: not a readable report ({exc})") from exc
    marker = out / "run.json"
    if marker.is_file():
        status = json.loads(marker.read_text(encoding="utf-8")).get("status")
        if status != "complete":
            raise InputError(f"{marker}: the audit's status is {status!r}; run the audit to completion first")
    for key in ("dataset", "variants", "references", "config"):
        if key not in report:
            raise InputError(f"{report_path}: field '{key}' is missing; is this an edgemia audit report?")
    return report


def read_audit_run(out: Path) -> AuditRun:
    """Read and check a finished audit run directory."""
    out = Path(out)
    report = _read_report(out)
    records = _checked_file(out, report["dataset"]["records"], report["dataset"]["records_sha256"],
                            "the records file")
    n_copies = (report.get("perturbation") or {}).get("copies", 0)
    copies = []
    for j in range(n_copies):
        path = out / "data" / perturbed_file_name(j)
        if not path.is_file():
            raise InputError(f"{path}: perturbed copy {j} not found; run the audit again")
        copies.append(InputFile(path, sha256_file(path)))
    references = report["references"].get("models", [])

    host_rows = [row for row in report["variants"] if not is_device_backend(row["backend"])]
    jobs: dict[tuple[str, str], tuple[str, list[CaptureJob]]] = {}
    first_bundle = None
    for row in host_rows:
        variant, model_format = row["name"], row["format"]
        if (variant, model_format) in jobs:
            continue
        slug = Path(row["capture"]["path"]).parts[1]
        first_bundle = first_bundle or out / Path(row["capture"]["path"]).parent
        target = _checked_file(out, row["artifact"]["path"], row["artifact"]["sha256"], f"the {variant} model")
        bundle_jobs = [CaptureJob(variant, slug, model_format, target, records, TARGET_FILE)]
        for summary in references:
            artifact = summary["artifacts_by_format"][variant][model_format]
            model = _checked_file(out, artifact["path"], artifact["sha256"],
                                  f"reference model {summary['k']}'s {variant} model")
            k = int(summary["k"])
            bundle_jobs.append(CaptureJob(variant, slug, model_format, model, records, reference_file_name(k), k))
        bundle_jobs += [
            CaptureJob(variant, slug, model_format, target, copy, perturbed_file_name(j))
            for j, copy in enumerate(copies)
        ]
        jobs[variant, model_format] = (slug, bundle_jobs)
    if first_bundle is None:
        raise InputError(f"{out / 'report.json'}: lists no host capture; run the audit again")

    # The member, in_mask and subgroup fields come from a host bundle, which the audit checked.
    bundle = load_bundle(first_bundle)
    if bundle.n_references != len(references):
        raise InputError(
            f"{bundle.location}: has {bundle.n_references} reference captures, but report.json lists "
            f"{len(references)} reference models; run the audit again"
        )
    return AuditRun(
        out=out,
        report=report,
        record_id=bundle.target.record_id,
        fields=HostBundleFields(bundle.member, bundle.in_mask, bundle.groups),
        jobs=jobs,
    )


def host_bundle_dir(run: AuditRun, slug: str, backend: str, model_format: str) -> Path:
    return capture_dir(run.out, slug, backend, model_format)


def capture_meta(path: Path) -> dict | None:
    """Return the meta of the capture file at `path`, or None when it is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        capture, _ = load_capture(path)
    except InputError:
        return None
    return capture.meta
