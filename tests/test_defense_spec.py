"""Training steps (defenses) in the variant grammar: names, values, order and bad parameters."""

from __future__ import annotations

import pytest

from conftest import run_cli
from edgemia.compression.spec import GRAMMAR, TRAINING_STEP, parse_variant, parse_variants
from edgemia.errors import InputError
from edgemia.training.dp import DEFAULT_SETTINGS as DP_SGD_DEFAULTS


@pytest.mark.parametrize(
    "text,name,defense,compression",
    [
        ("dp-sgd:eps=8+prune:0.5+int8", "dp-sgd:eps=8+prune:0.5+int8", "dp-sgd:eps=8", "prune:0.5+int8"),
        ("dp-sgd:eps=8:delta=0.00001:clip=1", "dp-sgd:eps=8", "dp-sgd:eps=8", "float"),
        ("dp-sgd:noise=1.1:clip=0.5+float", "dp-sgd:clip=0.5:noise=1.1", "dp-sgd:clip=0.5:noise=1.1", "float"),
        ("dp-sgd:lr=0.003:batch=64:eps=1", "dp-sgd:eps=1:batch=64:lr=0.003", "dp-sgd:eps=1:batch=64:lr=0.003", "float"),
        ("l2:1e-4+dropout:0.2+int8", "l2:0.0001+dropout:0.2+int8", "l2:0.0001+dropout:0.2", "int8"),
        ("label-smoothing:0.1", "label-smoothing:0.1", "label-smoothing:0.1", "float"),
        ("early-stop:patience=5+int4", "early-stop:patience=5+int4", "early-stop:patience=5", "int4"),
        ("pate:teachers=20+int8", "pate:teachers=20+int8", "pate:teachers=20", "int8"),
        ("pate:teachers=10", "pate", "pate", "float"),
        ("prune:0.5+int8", "prune:0.5+int8", "", "prune:0.5+int8"),
    ],
)
def test_defense_names(text, name, defense, compression):
    spec = parse_variant(text)
    assert spec.name == name
    assert spec.defense == defense
    assert spec.compression_name == compression
    assert parse_variant(spec.name).name == name


def test_defense_steps_are_training_steps():
    spec = parse_variant("l2:0.01+early-stop+prune:0.5+int8")
    assert [step.kind for step in spec.training_steps] == [TRAINING_STEP, TRAINING_STEP]
    assert spec.training_steps[1]["holdout"] == 0.2
    assert spec.training_steps[1]["patience"] == 10
    assert spec.model_steps[2].word == "prune"


def test_dp_sgd_defaults():
    step = parse_variant("dp-sgd:eps=2").model_steps[0]
    assert step["eps"] == 2.0
    assert step["delta"] == 1e-5
    assert step["clip"] == 1.0
    assert step["noise"] is None
    assert step["epochs"] == DP_SGD_DEFAULTS.epochs
    assert step["batch"] == DP_SGD_DEFAULTS.batch_size
    assert step["lr"] == DP_SGD_DEFAULTS.learning_rate


def test_dp_sgd_defaults_in_grammar():
    text = " ".join(GRAMMAR.split())
    assert f"epochs=N (default {DP_SGD_DEFAULTS.epochs})" in text
    assert f"batch=N (expected batch size, default {DP_SGD_DEFAULTS.batch_size})" in text
    assert f"lr=X (Adam learning rate, default {DP_SGD_DEFAULTS.learning_rate:g})" in text


def test_dp_sgd_options_override_defaults():
    step = parse_variant("dp-sgd:eps=1:epochs=15:batch=32:lr=0.001").training_steps[0]
    assert (step["epochs"], step["batch"], step["lr"]) == (15, 32, 1e-3)
    # Options equal to the defaults name the same variant as leaving them out.
    explicit = (f"dp-sgd:eps=1:epochs={DP_SGD_DEFAULTS.epochs}:batch={DP_SGD_DEFAULTS.batch_size}:"
                f"lr={DP_SGD_DEFAULTS.learning_rate:g}")
    assert parse_variant(explicit).name == "dp-sgd:eps=1"


def test_pate_uses_population():
    assert parse_variant("pate:teachers=5").uses_population
    assert not parse_variant("dp-sgd:eps=1").uses_population


@pytest.mark.parametrize(
    "spec,parameter",
    [("dp-sgd:eps=-1", "eps -1"), ("pate:teachers=1", "teachers 1")],
)
def test_cli_bad_defense_exits_2(tmp_path, spec, parameter):
    result = run_cli("audit", "--variants", f"float,{spec}", "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert f"invalid variant '{spec}'" in result.stderr
    assert parameter in result.stderr
    assert "Variant grammar: STEP[+STEP...]" in result.stderr
    assert not (tmp_path / "run").exists()


def test_cli_pate_without_population_exits_2(tmp_path):
    result = run_cli("audit", "--variants", "float,pate:teachers=4", "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "pate:teachers=4 uses population records" in result.stderr
    assert "--population" in result.stderr


@pytest.mark.parametrize(
    "text,name",
    [
        ("dropout:0.2+l2:0.01", "l2:0.01+dropout:0.2"),
        ("dropout:0.2+l2:0.01+int8", "l2:0.01+dropout:0.2+int8"),
        ("early-stop+label-smoothing:0.1+l2:0.01+prune:0.5", "l2:0.01+label-smoothing:0.1+early-stop+prune:0.5"),
        ("dp-sgd:eps=1+dropout:0.2+l2:0.01", "l2:0.01+dropout:0.2+dp-sgd:eps=1"),
        ("pate+label-smoothing:0.1+int8", "label-smoothing:0.1+pate+int8"),
    ],
)
def test_training_steps_any_order(text, name):
    spec = parse_variant(text)
    assert spec.name == name
    assert spec.slug == parse_variant(name).slug
    assert spec.defense == "+".join(str(step) for step in spec.training_steps)


def test_training_order_keeps_model_steps():
    spec = parse_variant("dropout:0.2+l2:0.01+distill:0.5+prune:0.5+int8")
    assert [step.word for step in spec.model_steps] == ["l2", "dropout", "distill", "prune"]


def test_training_orders_one_variant():
    with pytest.raises(InputError, match="names l2:0.01\\+dropout:0.2 more than once"):
        parse_variants(["l2:0.01+dropout:0.2", "dropout:0.2+l2:0.01"])
