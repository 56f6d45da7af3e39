"""Audit configuration files and a team's own records (CSV, Parquet, NPZ)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from report_schema import assert_matches_schema
from edgemia.data.tables import RecordsSource, load_table, load_table_data
from edgemia.errors import InputError

REPOSITORY = Path(__file__).resolve().parent.parent

CSV_HEADER = "patient,age,bmi,sex,outcome\n"
CSV_ROWS = [
    "101,34,22.1,female,healthy",
    "102,51,31.0,male,ill",
    "103,45,27.5,female,ill",
    "104,29,24.9,male,healthy",
]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _config(tmp_path: Path, records_table: str, audit_table: str = "") -> Path:
    return _write(tmp_path, "audit.toml", f"[audit]\n{audit_table}\n[records]\n{records_table}\n")


def _audit(tmp_path: Path, config: Path):
    out = tmp_path / "run"
    result = run_cli("audit", "--config", str(config), "--out", str(out))
    return result, out


@pytest.mark.parametrize(
    "rows,message",
    [
        (CSV_ROWS[:2] + ["103,45,,female,ill"] + CSV_ROWS[3:], "has 1 missing value (first at row 2)"),
        (CSV_ROWS[:1] + ["102,51,-inf,male,ill", "103,45,inf,female,ill"] + CSV_ROWS[3:],
         "has 2 infinite values (first at row 1)"),
    ],
    ids=["missing", "infinite"],
)
def test_csv_bad_value_names_column(tmp_path, rows, message):
    _write(tmp_path, "patients.csv", CSV_HEADER + "\n".join(rows) + "\n")
    config = _config(tmp_path, 'path = "patients.csv"\nlabel = "outcome"\nid = "patient"\ngroups = ["sex"]')
    result, out = _audit(tmp_path, config)
    assert result.returncode == 2, result.stderr
    assert f"patients.csv: column 'bmi' (records.features) {message}" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("column,role", [("outcome", "records.label"), ("patient", "records.id")])
def test_label_or_id_listed_as_feature_rejected(tmp_path, column, role):
    path = _write(tmp_path, "patients.csv", CSV_HEADER + "\n".join(CSV_ROWS) + "\n")
    source = RecordsSource(path=path, label="outcome", id_column="patient", features=("age", column))
    with pytest.raises(InputError, match=f"records.features lists '{column}', which is the {role} column"):
        load_table(source)


def test_numeric_column_with_typo_warns(tmp_path, caplog):
    rows = [f"{100 + i},{30 + i},{20 + i / 10},{'female' if i % 2 else 'male'},{'ill' if i % 3 else 'healthy'}"
            for i in range(40)]
    rows[7] = "107,3O,20.7,female,ill"  # the letter O for a zero
    path = _write(tmp_path, "patients.csv", CSV_HEADER + "\n".join(rows) + "\n")
    with caplog.at_level("WARNING", logger="edgemia.data.tables"):
        _, _, names = load_table(RecordsSource(path=path, label="outcome", id_column="patient"))
    assert "column 'age' (records.features) contains numbers except in 1 row (first '3O' at row 7)" in caplog.text
    assert "age=3O" in names  # still one-hot encoded, as the warning states
    caplog.clear()
    with caplog.at_level("WARNING", logger="edgemia.data.tables"):
        load_table(RecordsSource(path=path, label="outcome", id_column="patient", features=("bmi", "sex")))
    assert caplog.text == ""


def test_reference_count_ignored_for_exported_model_warns(tmp_path, caplog):
    from edgemia.audit import AuditConfig

    with caplog.at_level("WARNING", logger="edgemia.audit"):
        config = AuditConfig(out=tmp_path / "run", model=tmp_path / "model.tflite", references=32)
    assert config.references == 0
    assert "model.tflite is audited as it is, so no reference models are trained" in caplog.text
    assert "the reference model count 32 is ignored" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="edgemia.audit"):
        AuditConfig(out=tmp_path / "run", model=tmp_path / "model.tflite")
    assert caplog.text == ""


# Both files add a fifth row with a class of its own: "unknown".
@pytest.mark.parametrize(
    "classes,messages,absent",
    [
        ('\nclasses = ["healthy", "ill"]',
         ["column 'outcome' (records.label) has 1 class that the model lacks: 'unknown' (first at row 4)",
          "the model's classes are healthy, ill"], []),
        ("", ["cannot be split into members and non-members with every class in each: class 2 has 1"],
         ["--population"]),
    ],
    ids=["class-model-lacks", "single-record-class"],
)
def test_extra_label_class_named(tmp_path, classes, messages, absent):
    rows = CSV_ROWS + ["105,60,29.0,male,unknown"]
    _write(tmp_path, "patients.csv", CSV_HEADER + "\n".join(rows) + "\n")
    config = _config(tmp_path, 'path = "patients.csv"\nlabel = "outcome"' + classes)
    result, out = _audit(tmp_path, config)
    assert result.returncode == 2, result.stderr
    for message in messages:
        assert message in result.stderr
    for message in absent:
        assert message not in result.stderr
    assert not out.exists()


def test_dataset_option_conflicts_with_records_table(tmp_path):
    _write(tmp_path, "patients.csv", CSV_HEADER + "\n".join(CSV_ROWS) + "\n")
    config = _config(tmp_path, 'path = "patients.csv"\nlabel = "outcome"')
    out = tmp_path / "run"
    result = run_cli("audit", "--config", str(config), "--dataset", "digits", "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert f"--dataset names a built-in data set, and [records] in {config} names the records" in result.stderr
    assert not out.exists()


def test_trained_model_gets_features_as_stored(tmp_path):
    from edgemia.data.tables import RecordsSource, load_table_data

    rows = [row + ("," + ("true" if i % 2 == 0 else "false")) for i, row in enumerate(CSV_ROWS)]
    _write(tmp_path, "patients.csv", CSV_HEADER.strip() + ",member\n" + "\n".join(rows) + "\n")
    source = RecordsSource(path=tmp_path / "patients.csv", label="outcome", features=("age", "bmi"),
                           id_column="patient", member="member")
    data = load_table_data(source, seed=0)
    # Rows 0 and 2 are the members: ages 34 and 45, BMIs 22.1 and 27.5, not standardized.
    np.testing.assert_array_equal(data.members.x, np.array([[34.0, 22.1], [45.0, 27.5]], dtype=np.float32))
    np.testing.assert_array_equal(data.nonmembers.x, np.array([[51.0, 31.0], [29.0, 24.9]], dtype=np.float32))


def test_repeated_class_rejected(tmp_path):
    _write(tmp_path, "patients.csv", CSV_HEADER + "\n".join(CSV_ROWS) + "\n")
    config = _config(tmp_path, 'path = "patients.csv"\nlabel = "outcome"\nclasses = ["healthy", "ill", "healthy"]')
    result, out = _audit(tmp_path, config)
    assert result.returncode == 2, result.stderr
    assert "records.classes lists 'healthy' more than once" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("suffix", ["csv", "parquet", "npz"])
def test_missing_group_column_named(tmp_path, suffix):
    import pandas as pd

    frame = pd.DataFrame({"age": [34, 51, 45, 29], "sex": ["f", "m", "f", "m"], "outcome": [0, 1, 1, 0]})
    path = tmp_path / f"patients.{suffix}"
    if suffix == "csv":
        frame.to_csv(path, index=False)
    elif suffix == "parquet":
        frame.to_parquet(path)
    else:
        np.savez(path, age=frame["age"].to_numpy(), sex=frame["sex"].to_numpy().astype(str),
                 outcome=frame["outcome"].to_numpy())
    config = _config(tmp_path, f'path = "patients.{suffix}"\nlabel = "outcome"\ngroups = ["gender"]')
    result, _ = _audit(tmp_path, config)
    assert result.returncode == 2, result.stderr
    assert f"patients.{suffix}: column 'gender' (records.groups) not found" in result.stderr
    assert "the file's columns are: age, sex, outcome" in result.stderr


@pytest.mark.parametrize(
    "text,message",
    [
        ("[audit]\nseed = 'zero'\n", "'audit.seed' must be an integer, got 'zero'"),
        ("[audit]\nreference_model = 4\n", "unknown key 'audit.reference_model'"),
        ("[audit]\nvariants = [1, 2]\n", "'audit.variants' must be a list of strings"),
        ("[audit]\nbootstrap = \n", "invalid TOML"),
        ("[audit]\nbootstrap = 39\n", "audit.toml: audit.bootstrap 39 is too few"),
        ("[audit]\nvariants = []\n", "'audit.variants' must be a list of at least one name, got []"),
        ("[audit]\npolicy = 'nope.toml'\n", "'audit.policy' names "),
        ("[audit]\nthreads = -3\n", "audit.toml: 'audit.threads' -3 is outside 0..1024"),
        ("[audit]\njobs = 1000\n", "audit.toml: 'audit.jobs' 1000 is outside 1..64"),
        ("[audit]\nreference_models = 100000\n", "audit.toml: 'audit.reference_models' 100000 is outside 0..4096"),
        ("[audit]\nseed = 8589934592\n", "audit.toml: 'audit.seed' 8589934592 is outside 0..4294967295"),
        ("[models]\nfile = 'm.tflite'\n", "unknown table 'models'"),
        ("[model]\nkeras = 'm.keras'\n", "unknown key 'model.keras'; valid keys of [model]: file"),
        ("[records]\npath = 'x.csv'\n", "missing key 'records.label'"),
        ("[training]\noptimizer = 'nadam'\n",
         "training.optimizer (--optimizer) is 'nadam'; valid optimizers: adam, adamw, sgd, rmsprop"),
        ("[training]\nmomentum = 0.9\n", "training.momentum (--momentum) is 0.9, and optimizer adam has no momentum"),
        ("[training]\noptimizer = 'sgd'\nmomentum = 1.5\n", "training.momentum (--momentum) is 1.5; it must be at"),
        ("[training]\nweight_decay = 0.01\n", "training.weight_decay (--weight-decay) is 0.01, and optimizer adam"),
        ("[training]\nrandom_flip = 'yes'\n", "'training.random_flip' must be true or false, got 'yes'"),
        ("[training]\nrandom_shift = 1.5\n", "'training.random_shift' must be an integer, got 1.5"),
        ("[training]\nrandom_shift = -1\n", "training.random_shift (--random-shift) is -1; it must be a whole"),
        ("[training]\nrandom_shift = 8\n", "training.random_shift (--random-shift) is 8 pixels, and the images of "
         "data set digits have 8x8 pixels; choose a shift below 8"),
        ("[audit]\ndataset = 'health-insurance'\n[training]\nrandom_shift = 1\n",
         "training.random_shift (--random-shift) augments images, and the records of data set health-insurance "
         "have shape ("),
        ("[training]\nepochs = 0\n", "'training.epochs' is 0; it must be at least 1"),
        ("[training]\nlearning_rate = inf\n", "'training.learning_rate' is inf; it must be a finite number above 0"),
        ("[training]\ninput_noise = -0.1\n", "'training.input_noise' is -0.1; it must be from 0 to 1"),
        ("[training]\ninput_noise = 1.5\n", "'training.input_noise' is 1.5; it must be from 0 to 1"),
        ("[training]\ninput_noise = inf\n", "'training.input_noise' is inf; it must be from 0 to 1"),
        ("[training]\narchitecture = 'resnet'\n", "training.architecture is 'resnet'"),
        ("[training]\narchitecture = 'keras-file:/etc/hostname'\n",
         "'training.architecture' is 'keras-file:/etc/hostname'; name a built-in architecture"),
        ("[audit]\ndataset = 'health-insurance'\n[training]\narchitecture = 'digits-cnn'\n",
         "training.architecture is 'digits-cnn', which takes images of shape (height, width, channels), and the "
         "records of data set health-insurance have shape (26,); set it to 'tabular-mlp' or remove it"),
        ("[training]\narchitecture = 'tabular-mlp'\n",
         "training.architecture is 'tabular-mlp', which takes feature vectors, and the records of data set digits "
         "have shape (8, 8, 1); set it to 'digits-cnn' or remove it"),
        ("[audit]\ndataset = 'mnist'\n", "unknown data set 'mnist'"),
    ],
)
def test_malformed_config_exits_two(tmp_path, text, message):
    config = _write(tmp_path, "audit.toml", text)
    result, out = _audit(tmp_path, config)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not out.exists()


def test_config_not_utf8_exits_two(tmp_path):
    config = tmp_path / "audit.toml"
    config.write_bytes(b"\xff\xfe[audit]\n")
    result, out = _audit(tmp_path, config)
    assert result.returncode == 2, result.stderr
    assert f"{config}: not UTF-8 text" in result.stderr
    assert not out.exists()


def test_command_line_overrides_config(tmp_path):
    from edgemia import cli

    config = _write(tmp_path, "audit.toml", "[audit]\nseed = 7\nbootstrap = 50\nvariants = ['float', 'int8']\n"
                    "policy = 'policy.toml'\n")
    _write(tmp_path, "policy.toml", "[rules]\nmin_accuracy = 0.5\n")
    args = cli._parse(["audit", "--config", str(config), "--seed", "3"])
    assert args.seed == 3
    assert args.bootstrap == 50
    assert args.variants == "float,int8"
    assert args.policy == tmp_path / "policy.toml"


def test_every_audit_option_has_config_key():
    from edgemia import cli
    from edgemia.config_file import AUDIT_KEYS, TRAINING_KEYS

    parser = cli.build_parser()
    audit = next(action for action in parser._subparsers._group_actions[0].choices.items() if action[0] == "audit")[1]
    destinations = {action.dest for action in audit._actions if action.dest not in ("help", "verbose", "config")}
    assert destinations - set(cli.RECIPE_OPTIONS) <= {destination for destination, _ in AUDIT_KEYS.values()}
    assert set(cli.RECIPE_OPTIONS) <= set(TRAINING_KEYS)


def test_example_config_loads():
    from edgemia.config_file import load_config_file

    values = load_config_file(REPOSITORY / "examples" / "health-insurance.toml")
    assert values["dataset"] == "health-insurance"
    assert values["policy"].resolve() == (REPOSITORY / "examples" / "policy.toml").resolve()
    assert values["training"] == {"architecture": "tabular-mlp", "epochs": 60, "batch_size": 64,
                                  "learning_rate": 0.001, "optimizer": "adam"}


def test_table_text_features_one_hot(tmp_path):
    path = _write(tmp_path, "patients.csv", CSV_HEADER + "\n".join(CSV_ROWS) + "\n")
    records, classes, names = load_table(RecordsSource(path=path, label="outcome", id_column="patient",
                                                       groups=("sex",), features=("age", "bmi", "sex")))
    assert classes == ["healthy", "ill"]
    assert names == ["age", "bmi", "sex=female", "sex=male"]
    np.testing.assert_array_equal(records.y, [0, 1, 1, 0])
    np.testing.assert_array_equal(records.record_id, [101, 102, 103, 104])
    np.testing.assert_array_equal(records.x[:, 2], [1, 0, 1, 0])
    assert records.groups["sex"].tolist() == ["female", "male", "female", "male"]


def test_npz_images_keep_shape(tmp_path):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    path = tmp_path / "digits.npz"
    np.savez(path, image=(bunch.images / 16.0)[..., None], digit=bunch.target)
    data = load_table_data(RecordsSource(path=path, label="digit", features=("image",)), seed=0)
    assert data.input_shape == (8, 8, 1)
    assert data.n_classes == 10
    assert len(data.members) + len(data.nonmembers) == 1797


def test_single_class_label_rejected(tmp_path):
    path = _write(tmp_path, "one.csv", "a,y\n1,x\n2,x\n")
    with pytest.raises(InputError, match="column 'y' \\(records.label\\) has a single class"):
        load_table(RecordsSource(path=path, label="y"))


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    """Run a small real audit of breast-cancer records written to CSV, with a derived subgroup column."""
    import pandas as pd  # noqa: F401 - the CSV is written through pandas
    from sklearn.datasets import load_breast_cancer

    tmp_path = tmp_path_factory.mktemp("csv-audit")
    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns={"target": "diagnosis"})
    frame["size"] = np.where(frame["mean radius"] > frame["mean radius"].median(), "large", "small")
    frame.insert(0, "record", np.arange(1000, 1000 + len(frame)))
    frame.to_csv(tmp_path / "cells.csv", index=False)
    config = _config(
        tmp_path,
        'path = "cells.csv"\nlabel = "diagnosis"\nid = "record"\ngroups = ["size"]\nname = "cells"',
        'variants = ["float", "int8"]\nbackends = ["native"]\nreference_models = 4\nbootstrap = 100\njobs = 2',
    )
    _write(tmp_path, "audit.toml", config.read_text() + "\n[training]\nepochs = 3\nbatch_size = 32\n")
    result, out = _audit(tmp_path, config)
    return result, out


@pytest.mark.slow
def test_audit_from_csv_records(csv_run):
    result, out = csv_run
    assert result.returncode == 0, result.stderr
    report = assert_matches_schema(out / "report.json")
    assert report["dataset"]["name"] == "cells"
    assert report["target"]["recipe"] == {"architecture": "tabular-mlp", "epochs": 3, "batch_size": 32,
                                          "learning_rate": 0.001, "input_noise": 0.0, "optimizer": "adam",
                                          "momentum": 0.0, "weight_decay": 0.0, "random_shift": 0,
                                          "random_flip": False}
    assert sorted(report["records"]["record_id"])[:2] == [1000, 1001]
    assert set(report["records"]["groups"]["size"]) == {"large", "small"}
    attributes = {row["attribute"] for row in report["variants"][0]["attacks"][0]["slices"]}
    assert "size" in attributes
    assert (out / "report.html").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["drop-feature", "truncate-model"])
def test_exported_model_mismatch_rejected_up_front(csv_run, tmp_path, damage):
    _, run = csv_run
    report = json.loads((run / "report.json").read_text())
    stored = np.load(run / "data" / "records.npz")
    x = stored["x"][:, :-1] if damage == "drop-feature" else stored["x"]
    np.savez(tmp_path / "trained.npz", x=x, y=stored["y"], record_id=stored["record_id"],
             member=np.array(report["records"]["member"]))
    model = (run / "artifacts" / "float.tflite").read_bytes()
    (tmp_path / "model.tflite").write_bytes(model[: len(model) // 3] if damage == "truncate-model" else model)
    config = _write(
        tmp_path, "exported.toml",
        '[model]\nfile = "model.tflite"\n'
        '[records]\npath = "trained.npz"\nlabel = "y"\nfeatures = ["x"]\nid = "record_id"\nmember = "member"\n'
        'classes = [0, 1]\n',
    )
    result, out = _audit(tmp_path, config)
    assert result.returncode == 2, result.stderr
    if damage == "drop-feature":
        assert "trained.npz: records.features give records of shape" in result.stderr
    else:
        assert "model.tflite" in result.stderr
    assert not out.exists()


@pytest.mark.slow
def test_exported_model_audited_as_is(csv_run, tmp_path):
    """The CSV audit's float .tflite, audited as exported, gives the same loss AUC as in that audit."""
    _, run = csv_run
    report = json.loads((run / "report.json").read_text())
    stored = np.load(run / "data" / "records.npz")
    np.testing.assert_array_equal(stored["record_id"], report["records"]["record_id"])
    np.savez(tmp_path / "trained.npz", x=stored["x"], y=stored["y"], record_id=stored["record_id"],
             size=stored["group_size"].astype(str), member=np.array(report["records"]["member"]))
    shutil.copy(run / "artifacts" / "float.tflite", tmp_path / "model.tflite")
    config = _write(
        tmp_path, "exported.toml",
        '[audit]\nbackends = ["native", "litert"]\nbootstrap = 100\n'
        '[model]\nfile = "model.tflite"\n'
        '[records]\npath = "trained.npz"\nlabel = "y"\nfeatures = ["x"]\nid = "record_id"\ngroups = ["size"]\n'
        'member = "member"\nclasses = [0, 1]\n',
    )
    result, out = _audit(tmp_path, config)
    assert result.returncode == 0, result.stderr
    exported = assert_matches_schema(out / "report.json")
    assert exported["exported_model"]["reference_models"] == 0
    assert {row["backend"] for row in exported["variants"]} == {"native", "litert"}
    names = [attack["name"] for attack in exported["variants"][0]["attacks"]]
    assert names == ["loss", "confidence", "entropy", "modified-entropy", "label-gap"]
    original = next(v for v in report["variants"] if v["name"] == "float")
    native = next(v for v in exported["variants"] if v["backend"] == "native")
    assert native["attacks"][0]["auc"] == original["attacks"][0]["auc"]
    assert "Weaker attacks only" in (out / "report.md").read_text()
    assert 'id="weaker"' in (out / "report.html").read_text()


@pytest.mark.parametrize(
    "model_table,records_table,message",
    [
        ('file = "model.h5"', "", "unsupported model type '.h5'"),
        ('file = "none.tflite"', "", "none.tflite: file not found"),
        ('file = "model.tflite"', "", "add a [records] table with a 'member' column"),
        ('file = "model.tflite"', 'path = "p.csv"\nlabel = "y"\nmember = "trained"',
         "column 'trained' (records.member) not found"),
    ],
)
def test_exported_model_errors(tmp_path, model_table, records_table, message):
    _write(tmp_path, "model.tflite", "not a model")
    _write(tmp_path, "model.h5", "not a model")
    _write(tmp_path, "p.csv", "a,y\n1,0\n2,1\n")
    text = f"[model]\n{model_table}\n" + (f"[records]\n{records_table}\n" if records_table else "")
    result, out = _audit(tmp_path, _write(tmp_path, "audit.toml", text))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not out.exists()


def _save_mlp(path: Path, n_inputs: int, n_classes: int, last_activation=None, lambda_layer: bool = False) -> Path:
    from edgemia._tf import import_keras

    keras = import_keras()
    inputs = keras.Input(shape=(n_inputs,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    if lambda_layer:
        hidden = keras.layers.Lambda(lambda t: t * 2)(hidden)
    outputs = keras.layers.Dense(n_classes, activation=last_activation)(hidden)
    keras.Model(inputs, outputs).save(path)
    return path


@pytest.mark.parametrize(
    "case,message",
    [
        ("softmax", "the last layer must be a Dense layer with 2 units (one per class) and no activation"),
        ("lambda", "cannot load the Keras model in safe mode"),
        ("inputs", "input shape (None, 5) does not match the records' (None, 30)"),
    ],
)
def test_keras_architecture_checked(tmp_path, case, message):
    from edgemia.errors import ModelFormatError
    from edgemia.training.models import KERAS_FILE_PREFIX, build_model

    path = _save_mlp(tmp_path / "team.keras", 5 if case == "inputs" else 30, 2,
                     last_activation="softmax" if case == "softmax" else None, lambda_layer=case == "lambda")
    with pytest.raises(ModelFormatError) as error:
        build_model(KERAS_FILE_PREFIX + str(path), (30,), 2)
    assert message in str(error.value)


@pytest.mark.slow
def test_keras_architecture_audit(csv_run, tmp_path):
    """The CSV records audited with a team's .keras architecture, cloned for the target and reference models."""
    _, run = csv_run
    shutil.copy(run.parent / "cells.csv", tmp_path / "cells.csv")
    _save_mlp(tmp_path / "team.keras", 30, 2)
    config = _write(
        tmp_path, "audit.toml",
        '[audit]\nvariants = ["float", "int8"]\nbackends = ["native"]\nreference_models = 4\nbootstrap = 50\n'
        'jobs = 2\nattacks = ["loss", "lira-online"]\n'
        '[model]\nfile = "team.keras"\n'
        '[records]\npath = "cells.csv"\nlabel = "diagnosis"\nid = "record"\ngroups = ["size"]\n'
        '[training]\nepochs = 2\n',
    )
    result, out = _audit(tmp_path, config)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["target"]["recipe"]["architecture"] == "keras-file:" + str((tmp_path / "team.keras").resolve())
    assert report["references"]["count"] == 4
    assert [attack["name"] for attack in report["variants"][0]["attacks"]] == ["loss", "lira-online"]
    # The clone keeps the team's layers: 30 * 16 + 16 + 16 * 2 + 2 parameters.
    assert report["compression"]["float"]["parameter_count"] == 530


@pytest.mark.slow
def test_trained_keras_target_audited(csv_run, tmp_path):
    """The CSV audit's own float.keras, given back as a team's trained model with its members, is the target."""
    import pandas as pd

    _, run = csv_run
    report = json.loads((run / "report.json").read_text())
    frame = pd.read_csv(run.parent / "cells.csv")
    member_by_id = dict(zip(report["records"]["record_id"], report["records"]["member"]))
    frame["member"] = frame["record"].map(member_by_id)
    # A trained model gets its features as stored, so the file contains the features the audit's
    # float.keras was trained on: standardized with the members' statistics.
    stored = np.load(run / "data" / "records.npz")
    position = {record: row for row, record in enumerate(stored["record_id"])}
    features = [name for name in frame.columns if name not in ("record", "diagnosis", "size", "member")]
    rows = [position[record] for record in frame["record"]]
    frame[features] = stored["x"][rows].astype(np.float64)
    frame.to_csv(tmp_path / "cells.csv", index=False)
    shutil.copy(run / "artifacts" / "float.keras", tmp_path / "team.keras")
    config = _write(
        tmp_path, "audit.toml",
        '[audit]\nvariants = ["float"]\nbackends = ["native"]\nreference_models = 4\nbootstrap = 0\n'
        'jobs = 2\nattacks = ["loss", "rmia"]\n'
        '[model]\nfile = "team.keras"\n'
        '[records]\npath = "cells.csv"\nlabel = "diagnosis"\nid = "record"\ngroups = ["size"]\nmember = "member"\n'
        '[training]\nepochs = 2\n',
    )
    result, out = _audit(tmp_path, config)
    assert result.returncode == 0, result.stderr
    audited = json.loads((out / "report.json").read_text())
    assert audited["target"]["accuracy"] == report["target"]["accuracy"]
    assert audited["target"]["training_seconds"] == 0.0
    assert audited["records"]["member"] == report["records"]["member"]
    original = next(v for v in report["variants"] if v["name"] == "float")
    assert audited["variants"][0]["attacks"][0]["auc"] == original["attacks"][0]["auc"]


@pytest.mark.slow
def test_keras_normalization_layer_rejected_up_front(tmp_path):
    """Keras's ONNX export turns a Normalization layer's mean and variance into graph inputs."""
    import pandas as pd

    from edgemia._tf import import_keras

    keras = import_keras()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 4)).astype(np.float32)
    frame = pd.DataFrame(x, columns=["a", "b", "c", "d"])
    frame["label"] = (x[:, 0] > 0).astype(int)
    frame["member"] = np.arange(80) % 2 == 0
    frame.to_csv(tmp_path / "rows.csv", index=False)
    inputs = keras.Input((4,))
    normalization = keras.layers.Normalization()
    normalization.adapt(x)
    keras.Model(inputs, keras.layers.Dense(2)(normalization(inputs))).save(tmp_path / "team.keras")
    config = _write(
        tmp_path, "audit.toml",
        '[audit]\nvariants = ["float"]\nbackends = ["native"]\nreference_models = 0\nbootstrap = 0\n'
        '[model]\nfile = "team.keras"\n[records]\npath = "rows.csv"\nlabel = "label"\nmember = "member"\n',
    )
    result, out = _audit(tmp_path, config)
    assert result.returncode == 2, result.stderr
    assert f"model.file {tmp_path / 'team.keras'}: the ONNX export of model" in result.stderr
    assert "Normalization layers" in result.stderr
    assert not out.exists()


def test_input_noise_changes_training_only():
    from edgemia.training.train import Recipe, fit_model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    plain = Recipe(architecture="tabular-mlp", epochs=2, batch_size=16, learning_rate=1e-2)
    noisy = Recipe(architecture="tabular-mlp", epochs=2, batch_size=16, learning_rate=1e-2, input_noise=0.5)
    plain_model, _ = fit_model(x, y, 2, plain, seed=0)
    noisy_model, _ = fit_model(x, y, 2, noisy, seed=0)
    assert [layer.name for layer in noisy_model.layers] == [layer.name for layer in plain_model.layers]
    assert not np.allclose(plain_model.get_weights()[0], noisy_model.get_weights()[0])
    again, _ = fit_model(x, y, 2, noisy, seed=0)
    np.testing.assert_array_equal(again.get_weights()[0], noisy_model.get_weights()[0])


def _tiny_images(n: int = 96, seed: int = 0):
    """Return random 8x8 one-channel images labelled by which half is brighter, so that shifts and flips matter."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 8, 8, 1)).astype(np.float32)
    y = (x[:, :, :4].sum(axis=(1, 2, 3)) > x[:, :, 4:].sum(axis=(1, 2, 3))).astype(np.int64)
    return x, y


@pytest.mark.parametrize(
    "optimizer,momentum,weight_decay,keras_class",
    [("adam", 0.0, 0.0, "Adam"), ("adamw", 0.0, 0.01, "AdamW"), ("sgd", 0.9, 0.0, "SGD"),
     ("rmsprop", 0.5, 0.001, "RMSprop")],
)
def test_recipe_optimizer_used(optimizer, momentum, weight_decay, keras_class):
    from edgemia.training.train import Recipe, fit_model

    x, y = _tiny_images()
    x = x.reshape(len(x), -1)
    recipe = Recipe(architecture="tabular-mlp", epochs=2, batch_size=32, learning_rate=1e-2, optimizer=optimizer,
                    momentum=momentum, weight_decay=weight_decay)
    model, _ = fit_model(x, y, 2, recipe, seed=0)
    used = model.optimizer
    assert type(used).__name__ == keras_class
    assert int(used.iterations.numpy()) == 2 * 3  # 2 epochs of 3 batches
    assert float(used.learning_rate.numpy()) == pytest.approx(1e-2)
    if momentum:
        assert used.momentum == momentum
    assert (used.weight_decay or 0.0) == pytest.approx(weight_decay)


def test_optimizers_train_differently():
    from edgemia.training.train import OPTIMIZERS, Recipe, fit_model

    x, y = _tiny_images()
    x = x.reshape(len(x), -1)
    weights = {}
    for optimizer in OPTIMIZERS:
        recipe = Recipe(architecture="tabular-mlp", epochs=1, batch_size=32, learning_rate=1e-2, optimizer=optimizer,
                        weight_decay=0.1 if optimizer == "adamw" else 0.0)
        weights[optimizer] = fit_model(x, y, 2, recipe, seed=0)[0].get_weights()[0]
    for first in OPTIMIZERS:
        for second in OPTIMIZERS:
            if first < second:
                assert not np.allclose(weights[first], weights[second]), (first, second)


def test_image_augmentation_deterministic():
    from edgemia.training.train import Recipe, augmentation_layers, fit_model

    x, y = _tiny_images()
    plain = Recipe(architecture="digits-cnn", epochs=2, batch_size=32, learning_rate=1e-2)
    shifted = Recipe(architecture="digits-cnn", epochs=2, batch_size=32, learning_rate=1e-2, random_shift=2)
    flipped = Recipe(architecture="digits-cnn", epochs=2, batch_size=32, learning_rate=1e-2, random_flip=True)
    plain_weights = fit_model(x, y, 2, plain, seed=0)[0].get_weights()
    for recipe in (shifted, flipped):
        first = fit_model(x, y, 2, recipe, seed=0)[0].get_weights()
        again = fit_model(x, y, 2, recipe, seed=0)[0].get_weights()
        other_seed = fit_model(x, y, 2, recipe, seed=1)[0].get_weights()
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)
        assert not np.allclose(first[0], plain_weights[0])
        assert not np.allclose(first[0], other_seed[0])

    # The layers change the images while training and leave them unchanged at inference.
    shift_layer, = augmentation_layers(shifted, (8, 8, 1), seed=0)
    flip_layer, = augmentation_layers(flipped, (8, 8, 1), seed=0)
    for layer in (shift_layer, flip_layer):
        np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
        assert not np.array_equal(np.asarray(layer(x, training=True)), x)
    flipped_images = np.asarray(flip_layer(x, training=True))
    is_flipped = [np.array_equal(out, image[:, ::-1]) for out, image in zip(flipped_images, x)]
    is_same = [np.array_equal(out, image) for out, image in zip(flipped_images, x)]
    assert all(a or b for a, b in zip(is_flipped, is_same))
    assert 0 < sum(is_flipped) < len(x)


def test_recipe_fields_change_task_keys():
    from edgemia.references import ReferenceTask
    from edgemia.training.train import Recipe

    base = Recipe(architecture="digits-cnn", epochs=2, batch_size=32, learning_rate=1e-3)
    changes = {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 0.01, "random_shift": 1, "random_flip": True,
               "input_noise": 0.1}

    def keys(recipe):
        task = ReferenceTask(out=Path("run"), records_path=Path("run/data/records.npz"),
                             in_mask=np.array([True, False]), n_classes=10, recipe=recipe, seed=0, k=0,
                             variants=("float",), captures=(("float", "native", "tflite"),), code="fixed")
        return task.training_key(), task.variant_key("float")

    base_keys = keys(base)
    assert keys(Recipe(**base.to_dict())) == base_keys
    for field, value in changes.items():
        changed = keys(Recipe(**{**base.to_dict(), field: value}))
        assert changed[0] != base_keys[0], field
        assert changed[1] != base_keys[1], field


def test_command_line_recipe_overrides_config(tmp_path):
    from edgemia import cli

    config = _write(tmp_path, "audit.toml", "[training]\noptimizer = 'sgd'\nmomentum = 0.5\nrandom_flip = true\n")
    args = cli._parse(["audit", "--config", str(config), "--momentum", "0.9", "--no-random-flip",
                       "--random-shift", "1"])
    assert cli.training_overrides(args) == {"optimizer": "sgd", "momentum": 0.9, "random_flip": False,
                                            "random_shift": 1}
    assert cli.training_overrides(cli._parse(["audit"])) == {}


def test_adamw_default_weight_decay():
    from edgemia.data.builtin import load_dataset
    from edgemia.training.recipes import ADAMW_WEIGHT_DECAY, audit_recipe

    data = load_dataset("digits", 0)
    assert audit_recipe(data, "digits", {"optimizer": "adamw"}).weight_decay == ADAMW_WEIGHT_DECAY
    assert audit_recipe(data, "digits", {"optimizer": "adamw", "weight_decay": 0.0}).weight_decay == 0.0
    assert audit_recipe(data, "digits", {"optimizer": "sgd"}).weight_decay == 0.0


@pytest.mark.parametrize(
    "options,message",
    [
        (["--optimizer", "nadam"], "argument --optimizer: invalid choice: 'nadam'"),
        (["--momentum", "0.9"], "training.momentum (--momentum) is 0.9, and optimizer adam has no momentum"),
        (["--optimizer", "rmsprop", "--weight-decay", "-1"], "training.weight_decay (--weight-decay) is -1.0"),
        (["--dataset", "breast-cancer", "--random-flip"],
         "training.random_flip (--random-flip) augments images, and the records of data set breast-cancer have "
         "shape (30,)"),
    ],
)
def test_bad_recipe_option_exits_two(tmp_path, options, message):
    out = tmp_path / "run"
    result = run_cli("audit", *options, "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not out.exists()


def test_tabular_csv_rejects_image_augmentation(tmp_path):
    _write(tmp_path, "patients.csv", CSV_HEADER + "\n".join(CSV_ROWS) + "\n")
    config = _write(tmp_path, "audit.toml", '[records]\npath = "patients.csv"\nlabel = "outcome"\n'
                    '[training]\nrandom_flip = true\n')
    result, out = _audit(tmp_path, config)
    assert result.returncode == 2, result.stderr
    assert "training.random_flip (--random-flip) augments images" in result.stderr
    # patient, age, bmi and sex one-hot encoded as two columns
    assert "patients.csv have shape (5,), not (height, width, channels)" in result.stderr
    assert not out.exists()


@pytest.mark.slow
def test_changed_recipe_never_reused(tmp_path):
    """Three small audits into one directory: a changed optimizer retrains everything, the same one reuses it."""
    out = tmp_path / "run"
    small = ("--dataset", "breast-cancer", "--epochs", "2", "--variants", "float", "--backends", "native",
             "--reference-models", "4", "--attacks", "loss,lira-online", "--bootstrap", "0", "--jobs", "2",
             "--out", str(out))
    counts = []
    for options in ([], ["--optimizer", "sgd", "--momentum", "0.9"], ["--optimizer", "sgd", "--momentum", "0.9"]):
        result = run_cli("audit", *small, *options)
        assert result.returncode == 0, result.stderr
        report = json.loads((out / "report.json").read_text())
        counts.append(report["tasks"])
        assert report["target"]["recipe"]["optimizer"] == (options[1] if options else "adam")
    assert counts[1]["computed"] == counts[0]["computed"]
    assert counts[1]["reused"] == 0
    assert counts[2]["computed"] == 0
    assert counts[2]["reused"] == counts[1]["computed"]


def test_renamed_zip_model_file_rejected(tmp_path):
    import zipfile

    from edgemia.errors import ModelFormatError
    from edgemia.training.models import load_keras_file

    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a model")
    with pytest.raises(ModelFormatError, match=r"model.file .*model.keras: cannot load the Keras model"):
        load_keras_file(path, (4,), 2)
