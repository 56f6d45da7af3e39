"""LiRA's TPR at 1% FPR with each variance estimator, on the target and on each reference model in turn.

Usage: .venv/bin/python benchmarks/lira_variance.py AUDIT_DIR VARIANT_SLUG [--backend native-tflite]

Reads the capture bundle of one variant of a finished `edgemia audit` run
(AUDIT_DIR/captures/VARIANT_SLUG/BACKEND) and scores online LiRA with
`lira.variance` per-record, fixed and pooled. Besides the audit's own
target, each of the K reference models serves once as the target, with its
own IN records as its members.

Its references are the other K - 1 models, less one per record. The audit
gives every record K/2 IN models, so a member of reference k has one IN
model fewer among the others than a non-member has. Dropping the last OUT
model of a member and the last IN model of a non-member leaves every record
K/2 - 1 IN and K/2 - 1 OUT models, so members and non-members have their
Gaussians fitted from equal counts.

Every model is trained by the same procedure, so the K rows are K more
draws of the attack on one training algorithm, at no extra training cost.
A leak lifts the TPR above 1% on most rows for some estimator, and an
unstable estimator spreads the rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edgemia.attacks.bundle import load_bundle
from edgemia.attacks.lira import _log_normal_density, _masked_median, _std
from edgemia.attacks.signals import logit_scaled_confidence
from edgemia.stats.roc import roc_curve, tpr_at_fpr

VARIANCES = ("per-record", "fixed", "pooled")


def _online(target_phi, reference_phi, in_mask, out_mask, variance) -> np.ndarray:
    """Online LiRA scores as edgemia.attacks.lira computes them, with the OUT models given apart from the IN ones."""
    mean_in = _masked_median(reference_phi, in_mask)
    mean_out = _masked_median(reference_phi, out_mask)
    std_in = _std(reference_phi, in_mask, variance, "IN")
    std_out = _std(reference_phi, out_mask, variance, "OUT")
    return _log_normal_density(target_phi, mean_in, std_in) - _log_normal_density(target_phi, mean_out, std_out)


def _tpr(target_phi, member, reference_phi, in_mask, out_mask) -> list[float]:
    values = []
    for variance in VARIANCES:
        scores = _online(target_phi, reference_phi, in_mask, out_mask, variance)
        values.append(tpr_at_fpr(roc_curve(scores, member), 0.01)[0])
    return values


def _drop_one(mask: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Clear the last True of each column of `mask` that `rows` selects."""
    mask = mask.copy()
    last = mask.shape[0] - 1 - np.argmax(mask[::-1], axis=0)
    columns = np.flatnonzero(rows & mask.any(axis=0))
    mask[last[columns], columns] = False
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audit_dir", type=Path)
    parser.add_argument("variant_slug")
    parser.add_argument("--backend", default="native-tflite", help="capture directory name (default: native-tflite)")
    args = parser.parse_args()

    bundle = load_bundle(args.audit_dir / "captures" / args.variant_slug / args.backend)
    labels = bundle.target.labels
    target_phi = logit_scaled_confidence(bundle.target.logits, labels)
    reference_phi = logit_scaled_confidence(bundle.reference_logits(), labels)
    in_mask = bundle.in_mask
    k_models = bundle.n_references
    print(f"{args.variant_slug}: {len(labels)} records, {k_models} reference models")
    counts = sorted({int(c) for c in in_mask.sum(axis=0)})
    print(f"IN models per record: {counts}")
    print("target        records  " + "  ".join(f"{v:>10}" for v in VARIANCES))

    rows = [("audit target", target_phi, bundle.member, reference_phi, in_mask, ~in_mask)]
    for k in range(k_models):
        others = np.arange(k_models) != k
        member = in_mask[k]
        inside = _drop_one(in_mask[others], ~member)
        outside = _drop_one(~in_mask[others], member)
        rows.append((f"reference {k}", reference_phi[k], member, reference_phi[others], inside, outside))
    table = []
    for name, phi, member, references, inside, outside in rows:
        values = _tpr(phi, member, references, inside, outside)
        table.append(values)
        print(f"{name:<13} {len(phi):<8} " + "  ".join(f"{100 * v:>9.2f}%" for v in values))
    pseudo = np.array(table[1:])
    print("mean over reference models as targets: "
          + ", ".join(f"{v} {100 * m:.2f}%" for v, m in zip(VARIANCES, pseudo.mean(axis=0))))
    print("rows above 1%: " + ", ".join(f"{v} {int((pseudo[:, i] > 0.01).sum())} of {len(pseudo)}"
                                         for i, v in enumerate(VARIANCES)))


if __name__ == "__main__":
    main()
