"""The second built-in data set: a tabular MLP on the Wisconsin breast cancer records."""

from __future__ import annotations

import pytest

from edgemia.audit import AuditConfig, run_audit

pytestmark = pytest.mark.slow


def test_breast_cancer_audit(tmp_path):
    report = run_audit(AuditConfig(out=tmp_path, dataset="breast-cancer", epochs=60, references=4))
    assert report["dataset"]["n_members"] + report["dataset"]["n_nonmembers"] == 569
    assert report["dataset"]["n_classes"] == 2
    rows = {row["variant"]: row for row in report["backend_agreement"]}
    assert rows["int8"]["identical_records"] == 569
    for variant in report["variants"]:
        assert variant["accuracy"]["nonmembers"] > 0.85
        assert {attack["name"] for attack in variant["attacks"]} == {
            "loss", "confidence", "entropy", "modified-entropy", "label-gap", "label-augment",
            "lira-online", "lira-offline", "rmia", "rmia-offline", "shadow",
        }
    assert len(report["references"]["models"]) == 4
