"""Add a device run's captures to the audit's report.json, report.md and report.html.

Each device bundle is attacked with the audit's attacks, options and
bootstrap resamples, and becomes a row of `variants` with backend
`device:<name>:<backend>` and its `format`, beside the host's rows.
Compressed variants get `versus_float` against float on the same device
backend and format. Two fields are added to report.json (schema_version
stays 1):

    devices           per board: name, target (user@host:port), profile,
                      board (the probe's facts: machine, CPU features,
                      Python, numpy and edgemia versions, ...), isa,
                      backends, notes, captured (time), seconds, captures
                      (made by the last device run) and reused (kept from an
                      earlier one)
    device_agreement  per variant, device backend and format, against the
                      host backend of the same name (else the host's first
                      backend of that format): identical_records and
                      n_records (target capture, record by record, on the
                      raw output), max_abs_logit_difference (target
                      capture), identical_reference_captures and
                      n_references, captures_identical (every target and
                      reference capture byte-equal), and per attack
                      host_auc, device_auc, auc_difference (device minus
                      host), auc_difference_p_value (DeLong's paired test)
                      and identical_scores; leakage_differs is true when
                      some attack's p-value is below LEAKAGE_SIGNIFICANCE

A later device run of the same board replaces that board's rows.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from edgemia.attacks import attack_options
from edgemia.attacks.bundle import CaptureBundle, load_bundle
from edgemia.devices.audit_run import AuditRun, device_backend_name, host_bundle_dir
from edgemia.devices.device_run import DeviceCaptures
from edgemia.devices.runner import DeviceSettings
from edgemia.evaluation import BundleEvaluation, evaluate_bundle, evaluate_bundles, variant_row, write_scores
from edgemia.reporting.writer import write_reports
from edgemia.stats.bootstrap import DEFAULT_CONFIDENCE, StratifiedResamples
from edgemia.stats.compare import delong_test

# Significance level of "leakage differs" between host and device.
LEAKAGE_SIGNIFICANCE = 0.05


def _agreement_row(key: tuple[str, str, str], device: str, host_backend: str, host: CaptureBundle,
                   host_evaluation: BundleEvaluation, bundle: CaptureBundle, evaluation: BundleEvaluation) -> dict:
    variant, backend, model_format = key
    same = (host.target.raw == bundle.target.raw).all(axis=1)
    identical_references = sum(
        bool(np.array_equal(a.raw, b.raw)) for a, b in zip(host.references, bundle.references)
    )
    attacks = []
    for name, scores in evaluation.scores.items():
        if name not in host_evaluation.scores:
            continue
        comparison = delong_test(scores, host_evaluation.scores[name], host.member)
        attacks.append({
            "name": name,
            "host_auc": host_evaluation.rows[name]["auc"],
            "device_auc": evaluation.rows[name]["auc"],
            "auc_difference": comparison.difference,
            "auc_difference_p_value": comparison.p_value,
            "identical_scores": bool(np.array_equal(scores, host_evaluation.scores[name])),
        })
    return {
        "variant": variant,
        "device": device,
        "backend": backend,
        "format": model_format,
        "host_backend": host_backend,
        "identical_records": int(same.sum()),
        "n_records": int(same.size),
        "max_abs_logit_difference": float(np.max(np.abs(host.target.logits - bundle.target.logits))),
        "identical_reference_captures": identical_references,
        "n_references": len(bundle.references),
        "captures_identical": bool(same.all()) and identical_references == len(bundle.references),
        "attacks": attacks,
        "leakage_differs": any(row["auc_difference_p_value"] < LEAKAGE_SIGNIFICANCE for row in attacks),
    }


def add_device_results(run: AuditRun, settings: DeviceSettings, captures: DeviceCaptures) -> dict:
    """Attack the device bundles, add their rows to the run's report, and rewrite the three reports.

    The stored policy verdict is kept as the audit left it; `edgemia report
    RUN_DIR --policy FILE` applies a policy to the device rows too.
    """
    report = run.report
    device = settings.profile.name
    attacks = report["config"]["attacks"]
    # report.json stores every family's options with the defaults filled in.
    options = report["config"].get("attack_options") or attack_options()
    bootstrap = report.get("bootstrap")
    member = run.fields.member
    resamples = StratifiedResamples(member, bootstrap["resamples"], bootstrap["seed"]) if bootstrap else None
    confidence = bootstrap["confidence"] if bootstrap else DEFAULT_CONFIDENCE

    bundles = {key: load_bundle(directory) for key, directory in captures.bundles.items()}
    evaluations = evaluate_bundles(bundles, attacks, resamples, confidence, options=options)
    for key, bundle in bundles.items():
        write_scores(captures.bundles[key], bundle, evaluations[key])

    rows, agreement = [], []
    for key, bundle in bundles.items():
        variant, backend, model_format = key
        name = device_backend_name(device, backend)
        row = variant_row(variant, name, bundle, captures.bundles[key] / "target.npz", run.out)
        host_row = next(r for r in report["variants"] if r["name"] == variant and r.get("format") == model_format)
        row = {"name": variant, "backend": name, "format": model_format, "artifact": host_row["artifact"], **row}
        row["capture"]["device_capture_sha256"] = bundle.target.meta.get("device", {}).get("capture_sha256")
        row["attacks"] = list(evaluations[key].rows.values())
        rows.append(row)

        # Attacks are deterministic, so the host's scores are computed again rather than read back.
        host_backends = run.host_backends(model_format)
        host_backend = backend if backend in host_backends else host_backends[0]
        slug = captures.bundles[key].parent.name
        host = load_bundle(host_bundle_dir(run, slug, host_backend, model_format))
        host_evaluation = evaluate_bundle(host, attacks, options=options)
        agreement.append(_agreement_row(key, device, host_backend, host, host_evaluation, bundle, evaluations[key]))

    produced = {(row["backend"], row["format"]) for row in rows}
    report["variants"] = [
        row for row in report["variants"] if (row["backend"], row.get("format")) not in produced
    ] + rows
    report["device_agreement"] = [
        row for row in report.get("device_agreement", [])
        if (device_backend_name(row["device"], row["backend"]), row["format"]) not in produced
    ] + agreement
    entry = {
        "name": device,
        "target": str(settings.target),
        "profile": settings.profile.to_dict(),
        "board": captures.check.facts,
        "isa": captures.check.isa,
        "backends": captures.backends,
        "notes": captures.check.notes,
        "captured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": captures.seconds,
        "captures": captures.captured,
        "reused": captures.reused,
    }
    report["devices"] = [d for d in report.get("devices", []) if d["name"] != device] + [entry]

    return write_reports(run.out, report)
