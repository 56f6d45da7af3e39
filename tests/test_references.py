"""Reference models: the IN/OUT assignment, their seeds and their training."""

from __future__ import annotations

import numpy as np
import pytest

from edgemia.errors import InputError
from edgemia.training.references import check_reference_count, reference_in_masks, reference_seed


@pytest.mark.parametrize("n_references", [2, 4, 16])
def test_every_record_in_for_half(n_references):
    masks = reference_in_masks(1797, n_references, seed=0)
    assert masks.shape == (n_references, 1797)
    assert masks.dtype == bool
    assert (masks.sum(axis=0) == n_references // 2).all()


def test_in_masks_deterministic_per_seed():
    np.testing.assert_array_equal(reference_in_masks(500, 8, seed=3), reference_in_masks(500, 8, seed=3))
    assert not np.array_equal(reference_in_masks(500, 8, seed=3), reference_in_masks(500, 8, seed=4))


def test_in_masks_look_random():
    masks = reference_in_masks(4000, 16, seed=0)
    # Each model trains on about half of the records, and two models of different pairs share about a quarter.
    assert np.abs(masks.mean(axis=1) - 0.5).max() < 0.05
    shared = (masks[0] & masks[2]).mean()
    assert shared == pytest.approx(0.25, abs=0.05)


def test_more_models_keep_the_first_masks():
    # A rerun with more reference models must find the first models' records unchanged.
    fewer, more = reference_in_masks(300, 4, seed=5), reference_in_masks(300, 16, seed=5)
    np.testing.assert_array_equal(more[:4], fewer)


def test_pairs_split_records_in_halves():
    masks = reference_in_masks(301, 6, seed=1)
    for pair in range(3):
        np.testing.assert_array_equal(masks[2 * pair], ~masks[2 * pair + 1])
        assert masks[2 * pair].sum() == 150


def test_no_references_gives_empty_masks():
    assert reference_in_masks(10, 0, seed=0).shape == (0, 10)


@pytest.mark.parametrize("count", [-2, 1, 3, 15])
def test_odd_or_negative_count_rejected(count):
    with pytest.raises(InputError, match=f"even number of at least 2, got {count}"):
        check_reference_count(count)


def test_seeds_depend_on_seed_and_k():
    seeds = {reference_seed(seed, k) for seed in range(3) for k in range(16)}
    assert len(seeds) == 48
    assert reference_seed(5, 2) == reference_seed(5, 2)
    assert all(0 <= s < 2**32 for s in seeds)


@pytest.mark.slow
def test_training_deterministic_per_seed_and_k():
    from edgemia.data.builtin import load_dataset
    from edgemia.training.references import train_reference
    from edgemia.training.train import RECIPES, Recipe

    data = load_dataset("breast-cancer", 0)
    pool, _ = data.all_records()
    masks = reference_in_masks(len(pool), 4, seed=0)
    recipe = Recipe(**{**RECIPES["breast-cancer"].to_dict(), "epochs": 3})

    def weights(k):
        trained = train_reference(pool, masks[k], data.n_classes, recipe, seed=0, k=k)
        return trained.model.get_weights()

    first, again, other = weights(1), weights(1), weights(2)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))


@pytest.mark.slow
def test_worker_processes_build_same_models(tmp_path):
    from edgemia.data.builtin import load_dataset
    from edgemia.data.records import save_records
    from edgemia.references import ReferenceTask, build_references
    from edgemia.runtime.capture import load_capture
    from edgemia.training.train import RECIPES, Recipe

    data = load_dataset("breast-cancer", 0)
    pool, _ = data.all_records()
    masks = reference_in_masks(len(pool), 2, seed=0)
    recipe = Recipe(**{**RECIPES["breast-cancer"].to_dict(), "epochs": 3})
    raw = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs-{jobs}"
        save_records(pool, out / "data" / "records.npz")
        tasks = [
            ReferenceTask(
                out=out, records_path=out / "data" / "records.npz", in_mask=masks[k], n_classes=2,
                recipe=recipe, seed=0, k=k, variants=("float", "int8"),
                captures=(("int8", "native", "tflite"), ("int8", "native", "onnx")),
            )
            for k in range(2)
        ]
        summaries = build_references(tasks, jobs=jobs)
        assert [summary["k"] for summary in summaries] == [0, 1]
        for k in range(2):
            for model_format in ("tflite", "onnx"):
                path = out / "captures" / "int8" / f"native-{model_format}" / f"reference-{k}.npz"
                capture, extras = load_capture(path)
                np.testing.assert_array_equal(extras["in_mask"], masks[k])
                raw[jobs, k, model_format] = capture.raw
            assert not (out / "captures" / "float").exists()
    for k in range(2):
        for model_format in ("tflite", "onnx"):
            np.testing.assert_array_equal(raw[1, k, model_format], raw[2, k, model_format])
