"""Training steps (defenses) in the variant grammar: names, values, order and bad parameters."""

from __future__ import annotations

import pytest

from conftest import run_cli
from edgemia.compression.spec import TRAINING_STEP, parse_variant


@pytest.mark.parametrize(
    "text,name,defense,compression",
    [
        ("dp-sgd:eps=8+prune:0.5+int8", "dp-sgd:eps=8+prune:0.5+int8", "dp-sgd:eps=8", "prune:0.5+int8"),
        ("dp-sgd:eps=8:delta=0.00001:clip=1", "dp-sgd:eps=8", "dp-sgd:eps=8", "float"),
        ("dp-sgd:noise=1.1:clip=0.5+float", "dp-sgd:clip=0.5:noise=1.1", "dp-sgd:clip=0.5:noise=1.1", "float"),
        ("dp-sgd:lr=0.01:batch=64:eps=1", "dp-sgd:eps=1:batch=64:lr=0.01", "dp-sgd:eps=1:batch=64:lr=0.01", "float"),
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
    assert step["epochs"] is None
    assert step["batch"] is None
    assert step["lr"] is None


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
