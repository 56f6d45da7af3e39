"""PATE: disjoint teachers, the noisy vote, its privacy cost, and a student trained on no member record."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgemia.compression.spec import parse_variant
from edgemia.errors import InputError
from edgemia.training import defenses
from edgemia.training.defenses import DefenseData, TrainingSettings, train_defended
from edgemia.training.pate import noisy_argmax, partition_records, pate_epsilon


def test_partitions_disjoint_and_complete():
    parts = partition_records(103, 10, seed=4)
    joined = np.concatenate(parts)
    assert len(parts) == 10
    assert sorted(joined.tolist()) == list(range(103))
    assert {len(part) for part in parts} == {10, 11}


def test_noisy_argmax_without_noise_is_plurality():
    votes = np.array([[0, 5, 1], [3, 0, 2], [0, 0, 7]])
    assert noisy_argmax(votes, 1e-9, seed=0).tolist() == [1, 0, 2]


def test_noisy_argmax_noise_flips_close_votes():
    votes = np.tile([[5, 4]], (2000, 1))
    flipped = float(np.mean(noisy_argmax(votes, 2.0, seed=0) == 1))
    # P(N(0, 4) - N(0, 4) > 1) = P(Z > 1 / sqrt(8)), a normal tail of about 0.362.
    assert flipped == pytest.approx(0.362, abs=0.03)


def test_pate_epsilon_equals_dp_accounting():
    import dp_accounting
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(3.0 / math.sqrt(2.0)), 200)
    assert pate_epsilon(3.0, 200, 1e-5) == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-12)
    assert pate_epsilon(6.0, 200, 1e-5) < pate_epsilon(3.0, 200, 1e-5)


@pytest.fixture(scope="module")
def unique_digits():
    """Digits without repeated images, split into 300 members and 200 population records, with record ids."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., None]
    _, first = np.unique(x.reshape(len(x), -1), axis=0, return_index=True)
    keep = np.sort(first)[:500]
    ids = np.arange(len(x))[keep]
    return x[keep], bunch.target[keep].astype(np.int64), ids


@pytest.mark.slow
def test_student_never_trains_on_member(unique_digits, monkeypatch):
    from edgemia.training.models import digits_cnn

    x, y, ids = unique_digits
    members, population = slice(0, 300), slice(300, 500)
    id_of_row = {row.tobytes(): record_id for row, record_id in zip(x, ids)}
    member_ids = set(ids[members].tolist())
    population_ids = set(ids[population].tolist())

    # Wrap the real training function to record, by record id, what every model trains on.
    trained_on = []
    real_fit = defenses._fit

    def recording_fit(model, x_train, targets, settings, **kwargs):
        trained_on.append({id_of_row[row.tobytes()] for row in x_train})
        return real_fit(model, x_train, targets, settings, **kwargs)

    monkeypatch.setattr(defenses, "_fit", recording_fit)
    data = DefenseData(x[members], y[members], ids[members], x[population], ids[population])
    settings = TrainingSettings(epochs=3, batch_size=32, learning_rate=1e-3)
    student, summary = train_defended(digits_cnn((8, 8, 1), 10), parse_variant("pate:teachers=4").training_steps,
                                      data, settings, seed=0)

    *teachers, student_records = trained_on
    assert len(teachers) == 4
    assert student_records == population_ids
    assert not student_records & member_ids
    for teacher_records in teachers:
        assert teacher_records <= member_ids
    assert set().union(*teachers) == member_ids
    assert sum(len(records) for records in teachers) == len(member_ids)

    assert set(summary["student_record_ids"]) == population_ids
    assert [set(part) for part in summary["teacher_record_ids"]] == teachers
    assert summary["queries"] == 200
    assert summary["epsilon_bound"] == "data-independent"
    assert summary["epsilon"] == pytest.approx(pate_epsilon(1.0, 200, 1e-5), rel=1e-12)
    assert summary["teachers"] == 4


def test_pate_without_population_rejected(unique_digits):
    from edgemia.training.models import digits_cnn

    x, y, ids = unique_digits
    settings = TrainingSettings(epochs=1, batch_size=32, learning_rate=1e-3)
    with pytest.raises(InputError, match="pate:teachers=4 labels population records for its student, and none"):
        train_defended(digits_cnn((8, 8, 1), 10), parse_variant("pate:teachers=4").training_steps,
                       DefenseData(x, y, ids), settings, seed=0)


@pytest.mark.slow
def test_audit_pate_student_ids(tmp_path):
    from edgemia.audit import AuditConfig, run_audit
    from edgemia.data.records import load_records

    out = tmp_path / "run"
    config = AuditConfig(out=out, variants=["float", "pate:teachers=3"], backends=["native"], attacks=["loss"],
                         references=0, epochs=3, bootstrap=0, population=0.2)
    report = run_audit(config)
    training = report["compression"]["pate:teachers=3"]["training"]
    member_ids = set(load_records(out / "data" / "members.npz").record_id.tolist())
    population_ids = set(load_records(out / "data" / "population.npz").record_id.tolist())
    assert set(training["student_record_ids"]) == population_ids
    assert not set(training["student_record_ids"]) & member_ids
    assert set().union(*map(set, training["teacher_record_ids"])) == member_ids
    assert training["epsilon_bound"] == "data-independent"
    rows = report["mitigation"]["bundles"][0]["recipes"][0]["rows"]
    assert rows[1]["epsilon"] == training["epsilon"]
    assert "data-independent" in (out / "report.md").read_text()
