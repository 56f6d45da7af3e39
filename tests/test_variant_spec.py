"""The variant grammar: parsing, canonical names and the errors a bad spec gets."""

from __future__ import annotations

import pytest

from conftest import run_cli
from edgemia.compression.spec import GRAMMAR, parse_variant, parse_variants
from edgemia.errors import InputError


@pytest.mark.parametrize(
    "text,name",
    [
        ("float", "float"),
        ("int8", "int8"),
        ("int8:calibration=minmax", "int8"),
        ("int8:calibration=entropy", "int8:calibration=entropy"),
        ("int4", "int4"),
        ("int4:block=64", "int4:block=64"),
        ("prune:0.80", "prune:0.8"),
        ("prune:0.8+float", "prune:0.8"),
        ("prune:0.8+int8", "prune:0.8+int8"),
        ("prune:0.5:epochs=5:scope=layer", "prune:0.5:scope=layer:epochs=5"),
        ("distill:0.5+int4", "distill:0.5+int4"),
        ("distill:0.5:data=population:temperature=2", "distill:0.5:temperature=2:data=population"),
        (" prune-structured:0.25 + int8-dynamic ", "prune-structured:0.25+int8-dynamic"),
        ("int16x8", "int16x8"),
    ],
)
def test_canonical_names(text, name):
    assert parse_variant(text).name == name


def test_defaults_filled_in():
    spec = parse_variant("distill:0.5+int8")
    (step,) = spec.model_steps
    assert step["width"] == 0.5
    assert step["temperature"] == 4.0
    assert step["data"] == "members"
    assert step["epochs"] == 80
    assert spec.export["calibration"] == "minmax"
    assert not spec.uses_population
    assert parse_variant("distill:2:data=population").uses_population


def test_slug_replaces_colons():
    assert parse_variant("prune:0.8+int8").slug == "prune_0.8+int8"
    assert parse_variant("int8").slug == "int8"


def test_prefixes_name_model_chains():
    spec = parse_variant("distill:0.5+prune:0.8+int8")
    assert spec.prefix(0) == ""
    assert spec.prefix(1) == "distill:0.5"
    assert spec.prefix(2) == "distill:0.5+prune:0.8"


@pytest.mark.parametrize(
    "text,reason",
    [
        ("prune:1.5", "sparsity 1.5 is outside 0 <= x < 1"),
        ("prune:1", "sparsity 1 is outside 0 <= x < 1"),
        ("prune:-0.1", "outside"),
        ("prune:nan", "outside"),
        ("prune:abc", "'abc' is not a number"),
        ("prune", "'prune' needs a sparsity"),
        ("prune-structured:0", "fraction 0 is outside 0 < x < 1"),
        ("distill:0", "width 0 is outside"),
        ("distill:0.5:data=public", "data 'public' is not one of members, population"),
        ("int3", "unknown word 'int3'"),
        ("quantize", "unknown word 'quantize'"),
        ("int8:calibration=kl", "calibration 'kl' is not one of minmax, entropy, percentile"),
        ("int4:block=48", "block '48' is not one of 32, 64, 128, 256"),
        ("int8:0.5", "takes no value '0.5'"),
        ("float:bits=8", "'float' has no option 'bits'; its options: none"),
        ("prune:0.5:epochs=0", "epochs 0 is outside 1..10000"),
        ("prune:0.5:scope=layer:scope=global", "option 'scope' is given twice"),
        ("int8+prune:0.5", "the export step 'int8' must come last"),
        ("int8+int4", "2 export steps"),
        ("prune:0.5++int8", "a step between '+' signs is empty"),
        ("prune:0.5:epochs=+3", "'+' separates steps, so a value cannot contain it (at '=+'); write numbers "
                                "without a '+' sign: 'prune:0.5:epochs=3'"),
        ("prune:+0.5+int8", "'+' separates steps, so a value cannot contain it (at ':+')"),
        ("distill:1e+2", "(at '1e+'); write numbers without a '+' sign: 'distill:1e2'"),
        ("prune:0_5", "sparsity '0_5' is not a number: write it without '_' separators"),
        ("prune:0.5:epochs=1_0", "epochs '1_0' is not a number: write it without '_' separators"),
        ("", "the spec is empty"),
        # Training steps (defenses): their values, their order and the combinations that cannot train together.
        ("dp-sgd:eps=-1", "dp-sgd: eps -1 is outside 0 < x <= 1e+06"),
        ("dp-sgd:eps=0", "eps 0 is outside"),
        ("dp-sgd:eps=inf", "eps inf is outside"),
        ("dp-sgd", "dp-sgd needs eps=E"),
        ("dp-sgd:eps=1:noise=2", "not both"),
        ("dp-sgd:eps=1:delta=1", "delta 1 is outside 0 < x < 1"),
        ("dp-sgd:eps=1:clip=0", "clip 0 is outside"),
        ("dp-sgd:eps=1:lr=0", "lr 0 is outside 0 < x <= 10"),
        ("dp-sgd:eps=1:batch=0", "batch 0 is outside 1..100000"),
        ("pate:teachers=1", "pate: teachers 1 is outside 2..1000"),
        ("pate:teachers=2.5", "teachers '2.5' is not an integer"),
        ("pate:noise=0", "noise 0 is outside"),
        ("l2:0", "lambda 0 is outside 0 < x <= 1"),
        ("l2", "'l2' needs a lambda"),
        ("dropout:1", "rate 1 is outside 0 < x < 1"),
        ("label-smoothing:-0.1", "alpha -0.1 is outside"),
        ("early-stop:holdout=0.9", "holdout 0.9 is outside 0 < x <= 0.5"),
        ("prune:0.5+dp-sgd:eps=1", "the training step 'dp-sgd' comes after 'prune'"),
        ("l2:0.1+l2:0.01", "the training step 'l2' is given twice"),
        ("dp-sgd:eps=1+pate", "dp-sgd and pate are two ways to train the model"),
        ("early-stop+dp-sgd:eps=1", "early-stop chooses the epoch on held-out training records"),
        ("pate+early-stop", "which pate's privacy accounting does not cover"),
    ],
)
def test_bad_spec_rejected_with_grammar(text, reason):
    with pytest.raises(InputError) as raised:
        parse_variant(text)
    message = str(raised.value)
    assert reason in message
    assert GRAMMAR in message
    assert raised.value.exit_code == 2


def test_same_variant_twice_rejected():
    with pytest.raises(InputError, match=r"names prune:0.8 more than once \('prune:0.8' and 'prune:0.80\+float'\)"):
        parse_variants(["prune:0.8", "prune:0.80+float"])


@pytest.mark.parametrize("spec", ["prune:1.5", "int3", "sparsify:0.5"])
def test_cli_bad_spec_exits_2_with_grammar(tmp_path, spec):
    result = run_cli("audit", "--variants", f"float,{spec}", "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "Variant grammar: STEP[+STEP...]" in result.stderr
    assert f"invalid variant '{spec}'" in result.stderr
    assert not (tmp_path / "run").exists()
