"""Capture bundles on disk: a round trip, and a clear error for each kind of bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgemia.attacks.bundle import load_bundle
from edgemia.errors import InputError
from synthetic import bundle_from_phi, gaussian_population, write_bundle


@pytest.fixture()
def bundle_dir(tmp_path):
    target_phi, member, reference_phi, in_mask = gaussian_population(40, 4, seed=20)
    return write_bundle(tmp_path / "bundle", bundle_from_phi(target_phi, member, reference_phi, in_mask))


def _rewrite(path, **changes):
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    np.savez(path, **arrays)


def _field(path, key):
    with np.load(path) as archive:
        return archive[key]


def test_round_trip(bundle_dir):
    bundle = load_bundle(bundle_dir)
    assert bundle.n_references == 4
    assert bundle.in_mask.shape == (4, 40)
    assert (bundle.in_mask.sum(axis=0) == 2).all()
    np.testing.assert_array_equal(bundle.member, _field(bundle_dir / "target.npz", "member"))
    assert bundle.location == str(bundle_dir)


def test_references_sorted_by_number(bundle_dir):
    for k in range(4, 11):
        (bundle_dir / f"reference-{k}.npz").write_bytes((bundle_dir / "reference-0.npz").read_bytes())
    bundle = load_bundle(bundle_dir)
    assert bundle.reference_sources[-2:] == [str(bundle_dir / "reference-9.npz"), str(bundle_dir / "reference-10.npz")]


def test_missing_directory(tmp_path):
    with pytest.raises(InputError, match="capture bundle directory not found"):
        load_bundle(tmp_path / "absent")


def test_missing_target(bundle_dir):
    (bundle_dir / "target.npz").unlink()
    with pytest.raises(InputError, match="'target.npz' not found"):
        load_bundle(bundle_dir)


def test_missing_member(bundle_dir):
    _rewrite(bundle_dir / "target.npz", member=None)
    with pytest.raises(InputError, match=r"target\.npz: field 'member' is missing"):
        load_bundle(bundle_dir)


def test_missing_in_mask(bundle_dir):
    _rewrite(bundle_dir / "reference-2.npz", in_mask=None)
    with pytest.raises(InputError, match=r"reference-2\.npz: field 'in_mask' is missing"):
        load_bundle(bundle_dir)


def test_in_mask_wrong_type(bundle_dir):
    _rewrite(bundle_dir / "reference-1.npz", in_mask=np.full(40, 0.5))
    with pytest.raises(InputError, match=r"reference-1\.npz: 'in_mask' has dtype float64; expected bool"):
        load_bundle(bundle_dir)


def test_in_mask_wrong_length(bundle_dir):
    _rewrite(bundle_dir / "reference-1.npz", in_mask=np.ones(39, bool))
    with pytest.raises(InputError, match=r"reference-1\.npz: 'in_mask' has shape \(39,\); expected .* \[40\]"):
        load_bundle(bundle_dir)


def test_records_in_other_order(bundle_dir):
    path = bundle_dir / "reference-3.npz"
    order = np.r_[1, 0, np.arange(2, 40)]
    _rewrite(path, **{key: _field(path, key)[order] for key in ("logits", "raw", "labels", "record_id", "in_mask")})
    with pytest.raises(InputError) as error:
        load_bundle(bundle_dir)
    message = str(error.value)
    assert str(path) in message
    assert "same records in a different order" in message
    assert "row 0: record_id 1 here, 0 in" in message


def test_other_records(bundle_dir):
    path = bundle_dir / "reference-0.npz"
    _rewrite(path, record_id=np.arange(40) + 100)
    with pytest.raises(InputError, match=r"reference-0\.npz: covers other records"):
        load_bundle(bundle_dir)


def test_fewer_records(bundle_dir):
    path = bundle_dir / "reference-0.npz"
    _rewrite(path, **{key: _field(path, key)[:30] for key in ("logits", "raw", "labels", "record_id", "in_mask")})
    with pytest.raises(InputError, match=r"reference-0\.npz: has 30 records but .*target\.npz has 40"):
        load_bundle(bundle_dir)


def test_labels_differ(bundle_dir):
    path = bundle_dir / "reference-0.npz"
    labels = _field(path, "labels")
    labels[[6, 9]] = 0
    _rewrite(path, labels=labels)
    with pytest.raises(InputError, match=r"'labels' differ from .* in 2 records \(first at row 6\)"):
        load_bundle(bundle_dir)


def test_other_backend(bundle_dir):
    path = bundle_dir / "reference-0.npz"
    meta = json.loads(str(_field(path, "meta")))
    _rewrite(path, meta=np.array(json.dumps({**meta, "backend": "litert"})))
    with pytest.raises(InputError, match=r"reference-0\.npz: captured with backend 'litert' but .* 'native'"):
        load_bundle(bundle_dir)


def test_bad_reference_name(bundle_dir):
    (bundle_dir / "reference-final.npz").write_bytes((bundle_dir / "reference-0.npz").read_bytes())
    with pytest.raises(InputError, match=r"reference-final\.npz: reference file names must be reference-<k>\.npz"):
        load_bundle(bundle_dir)


def test_duplicate_reference_number(bundle_dir):
    (bundle_dir / "reference-01.npz").write_bytes((bundle_dir / "reference-1.npz").read_bytes())
    with pytest.raises(InputError, match="reference model 1 also appears"):
        load_bundle(bundle_dir)


def test_record_never_left_out_names_bundle(bundle_dir):
    for k in range(4):
        path = bundle_dir / f"reference-{k}.npz"
        mask = _field(path, "in_mask")
        mask[21] = True
        _rewrite(path, in_mask=mask)
    bundle = load_bundle(bundle_dir)
    with pytest.raises(InputError) as error:
        bundle.require_references("lira-offline", out_models=1)
    message = str(error.value)
    assert message.startswith(f"{bundle_dir}: attack 'lira-offline'")
    assert "record_id 21 at row 21, OUT for 0 of 4" in message


def test_member_must_have_both_classes(bundle_dir):
    _rewrite(bundle_dir / "target.npz", member=np.ones(40, bool))
    with pytest.raises(InputError, match="at least one member and one non-member"):
        load_bundle(bundle_dir)


def _with_row(path, key, row, value):
    values = _field(path, key).copy()
    values[row] = value
    _rewrite(path, **{key: values})


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("labels", -1, r"'labels' row 3 is -1, outside the 2 classes"),
        ("labels", 15, r"'labels' row 3 is 15, outside the 2 classes"),
        ("logits", np.nan, r"'logits' row 3 contains NaN or infinite values"),
        ("logits", np.inf, r"'logits' row 3 contains NaN or infinite values"),
        ("record_id", 0, r"'record_id' 0 appears 2 times"),
    ],
)
def test_bad_capture_values_named(bundle_dir, key, value, message):
    _with_row(bundle_dir / "target.npz", key, 3, value)
    with pytest.raises(InputError, match=message):
        load_bundle(bundle_dir)


def test_fractional_labels_rejected(bundle_dir):
    path = bundle_dir / "reference-1.npz"
    _rewrite(path, labels=_field(path, "labels") + 0.5)
    with pytest.raises(InputError, match=r"reference-1\.npz: 'labels' must be integers, got float64"):
        load_bundle(bundle_dir)


def test_one_class_logits_rejected(bundle_dir):
    for path in bundle_dir.glob("*.npz"):
        _rewrite(path, logits=_field(path, "logits")[:, :1])
    with pytest.raises(InputError, match="1 class column"):
        load_bundle(bundle_dir)


def test_meta_must_be_object(bundle_dir):
    _rewrite(bundle_dir / "target.npz", meta=np.array("[1, 2, 3]"))
    with pytest.raises(InputError, match="'meta' must be a JSON object, got list"):
        load_bundle(bundle_dir)
