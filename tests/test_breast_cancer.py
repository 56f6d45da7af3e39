"""The second built-in data set: a tabular MLP on the Wisconsin breast cancer records."""

from __future__ import annotations

import pytest

from edgemia.audit import AuditConfig, run_audit

pytestmark = pytest.mark.slow


def test_breast_cancer_audit(tmp_path):
    report = run_audit(AuditConfig(out=tmp_path, dataset="breast-cancer", epochs=60, references=4))
    assert report["dataset"]["n_members"] + report["dataset"]["n_nonmembers"] == 569
    assert report["dataset"]["n_classes"] == 2
    rows = {(row["variant"], row["format"]): row for row in report["backend_agreement"]}
    assert rows["int8", "tflite"]["identical_records"] == 569
    assert rows["int8", "onnx"]["identical_records"] == 569
    for variant in report["variants"]:
        assert variant["accuracy"]["nonmembers"] > 0.85
        assert {attack["name"] for attack in variant["attacks"]} == {
            "loss", "confidence", "entropy", "modified-entropy", "label-gap", "label-augment",
            "lira-online", "lira-offline", "rmia", "rmia-offline", "shadow",
        }
    assert len(report["references"]["models"]) == 4
    # The first dense layer reads 30 features, not a multiple of the int4 block size 32.
    notes = report["compression"]["int4"]["notes"]
    assert len(notes) == 1
    assert "dense1" in notes[0]
    assert "multiple of the block size 32" in notes[0]
