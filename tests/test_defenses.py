"""Training-time defenses on real digits data: l2, dropout, label smoothing and early stopping."""

from __future__ import annotations

import numpy as np
import pytest

from edgemia.compression.spec import parse_variant
from edgemia.training.defenses import (
    DefenseData,
    TrainingSettings,
    holdout_split,
    plain_copy,
    smoothed_targets,
    train_defended,
    training_model,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., None]
    return x[:400], bunch.target[:400].astype(np.int64)


@pytest.fixture(scope="module")
def base():
    from edgemia.training.models import digits_cnn

    return digits_cnn((8, 8, 1), 10)


def _kernel_norm(model) -> float:
    return float(sum(np.sum(layer.kernel.numpy() ** 2) for layer in model.layers if hasattr(layer, "kernel")))


def test_smoothed_targets_closed_form():
    targets = smoothed_targets(np.array([0, 2]), 4, 0.2)
    np.testing.assert_allclose(targets[0], [0.85, 0.05, 0.05, 0.05], rtol=1e-6)
    np.testing.assert_allclose(targets[1], [0.05, 0.05, 0.85, 0.05], rtol=1e-6)


def test_holdout_split_per_class():
    y = np.repeat(np.arange(3), [10, 20, 5])
    keep, held = holdout_split(y, 0.2, seed=0)
    assert np.bincount(y[held], minlength=3).tolist() == [2, 4, 1]
    assert len(np.intersect1d(keep, held)) == 0
    assert len(keep) + len(held) == len(y)


def test_dropout_model_and_plain_copy(base, digits):
    x, _ = digits
    trained = training_model(base, l2=0.01, dropout=0.3)
    dropout_layers = [layer.name for layer in trained.layers if type(layer).__name__ == "Dropout"]
    assert dropout_layers == ["conv1_dropout", "conv2_dropout", "dense1_dropout"]
    assert trained.get_layer("dense1").kernel_regularizer is not None
    plain = plain_copy(trained, base)
    assert [type(layer).__name__ for layer in plain.layers] == [type(layer).__name__ for layer in base.layers]
    assert all(getattr(layer, "kernel_regularizer", None) is None for layer in plain.layers)
    np.testing.assert_allclose(plain.predict(x[:32], verbose=0), trained.predict(x[:32], verbose=0), atol=1e-6)


def test_l2_shrinks_kernels(base, digits):
    x, y = digits
    settings = TrainingSettings(epochs=5, batch_size=32, learning_rate=1e-3)
    plain, _ = train_defended(base, parse_variant("label-smoothing:0.01").training_steps, DefenseData(x, y),
                              settings, seed=3)
    penalized, summary = train_defended(base, parse_variant("label-smoothing:0.01+l2:0.01").training_steps,
                                        DefenseData(x, y), settings, seed=3)
    assert summary["training_steps"] == ["l2:0.01", "label-smoothing:0.01"]  # in canonical order
    assert _kernel_norm(penalized) < 0.8 * _kernel_norm(plain)


def test_label_smoothing_lowers_confidence(base, digits):
    x, y = digits
    settings = TrainingSettings(epochs=30, batch_size=32, learning_rate=1e-3)
    sharp, _ = train_defended(base, parse_variant("l2:0.000001").training_steps, DefenseData(x, y), settings, seed=5)
    smooth, _ = train_defended(base, parse_variant("l2:0.000001+label-smoothing:0.3").training_steps,
                               DefenseData(x, y), settings, seed=5)

    def mean_top_probability(model):
        logits = model.predict(x, verbose=0).astype(np.float64)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return float(np.mean(p.max(axis=1) / p.sum(axis=1)))

    # With alpha = 0.3 and 10 classes the smoothed target puts 0.73 on the label.
    assert mean_top_probability(sharp) > 0.95
    assert mean_top_probability(smooth) < 0.85


def test_early_stop_stops_after_patience(base, digits):
    x, y = digits
    settings = TrainingSettings(epochs=200, batch_size=32, learning_rate=1e-2)
    _, summary = train_defended(base, parse_variant("early-stop:patience=3:holdout=0.25").training_steps,
                                DefenseData(x, y), settings, seed=1)
    assert summary["holdout_records"] == sum(int(round(0.25 * c)) for c in np.bincount(y))
    assert summary["epochs"] < 200
    assert summary["epochs"] == summary["best_epoch"] + 3


def test_exporter_trains_defense_first(base, digits, tmp_path):
    from edgemia.compression.pruning import FineTuning
    from edgemia.compression.variants import CompressionData, VariantExporter

    x, y = digits
    spec = parse_variant("l2:0.01+prune:0.5:epochs=2+int8")
    tuning = FineTuning(batch_size=32, learning_rate=1e-3, epochs=3)
    with VariantExporter(base, CompressionData(x, y), tmp_path, seed=0, tuning=tuning) as exporter:
        export = exporter.export(spec)
        defended = exporter.model(spec, 1)
    assert export.summary["training"]["training_steps"] == ["l2:0.01"]
    assert export.summary["training"]["epochs"] == 3
    assert (tmp_path / "l2_0.01.keras").is_file()
    assert (tmp_path / "l2_0.01+prune_0.5_epochs=2.keras").is_file()
    assert set(export.artifacts) == {"tflite", "onnx"}
    # The defended model is trained anew, not a fine-tuned copy of `base`.
    assert not np.allclose(defended.get_layer("dense1").kernel.numpy(), base.get_layer("dense1").kernel.numpy())


def test_exporter_without_recipe_rejects_defense(base, digits, tmp_path):
    from edgemia.compression.variants import CompressionData, VariantExporter
    from edgemia.errors import InputError

    x, y = digits
    with VariantExporter(base, CompressionData(x, y), tmp_path, seed=0) as exporter:
        with pytest.raises(InputError, match="training step 'l2:0.01' trains the model anew from its recipe"):
            exporter.model(parse_variant("l2:0.01"))


def test_compress_command_rejects_defense(base, digits, tmp_path):
    from conftest import run_cli
    from edgemia.data.records import Records, save_records

    x, y = digits
    base.save(tmp_path / "model.keras")
    save_records(Records(x[:64], y[:64], np.arange(64)), tmp_path / "members.npz")
    result = run_cli("compress", "--model", str(tmp_path / "model.keras"), "--variant", "dp-sgd:eps=8+int8",
                     "--calibration", str(tmp_path / "members.npz"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert "training step 'dp-sgd:eps=8' trains the model anew from its recipe" in result.stderr
    assert "edgemia audit" in result.stderr


def test_defenses_train_with_the_recipes_optimizer_and_augmentation(base, digits):
    from edgemia.training.train import Recipe

    x, y = digits
    steps = parse_variant("l2:0.001").training_steps

    def train(**fields):
        recipe = Recipe(architecture="digits-cnn", epochs=3, batch_size=32, learning_rate=1e-2, **fields)
        settings = TrainingSettings(epochs=3, batch_size=32, learning_rate=1e-2, recipe=recipe)
        model, summary = train_defended(base, steps, DefenseData(x, y), settings, seed=5)
        return model.get_weights(), summary

    adam, adam_summary = train()
    sgd, sgd_summary = train(optimizer="sgd", momentum=0.9)
    shifted, _ = train(random_shift=1)
    shifted_again, _ = train(random_shift=1)
    assert (adam_summary["optimizer"], sgd_summary["optimizer"]) == ("adam", "sgd")
    assert any(not np.array_equal(a, b) for a, b in zip(adam, sgd))
    assert any(not np.array_equal(a, b) for a, b in zip(adam, shifted))
    for a, b in zip(shifted, shifted_again):
        np.testing.assert_array_equal(a, b)
