"""Compression variants on a briefly trained digits CNN: pruning, distillation, every export step and runtime."""

from __future__ import annotations

import numpy as np
import pytest

from edgemia.compression.spec import parse_variant, parse_variants
from edgemia.compression.variants import CompressionData, VariantExporter
from edgemia.errors import UnsupportedModelError
from edgemia.runtime.capture import BACKEND_FORMATS, read_model
from edgemia.runtime.io import quantize_input
from edgemia.runtime.native import NativeSession

pytestmark = pytest.mark.slow

SPECS = [
    "float",
    "int8",
    "int8:calibration=percentile",
    "int8-dynamic",
    "int16x8",
    "int4",
    "prune:0.5:epochs=4",
    "prune:0.8:epochs=4+int8",
    "prune:0.7:scope=layer:epochs=4",
    "prune-structured:0.5:epochs=4",
    "prune-structured:0.5:epochs=4+int8",
    "distill:0.5:epochs=4+int4",
]


@pytest.fixture(scope="module")
def digits():
    from edgemia.data.builtin import load_dataset

    return load_dataset("digits", 0)


@pytest.fixture(scope="module")
def teacher(digits):
    from edgemia.training.train import RECIPES, Recipe, fit_model

    recipe = Recipe(**{**RECIPES["digits"].to_dict(), "epochs": 10})
    model, _ = fit_model(digits.members.x, digits.members.y, digits.n_classes, recipe, seed=0)
    return model


@pytest.fixture(scope="module")
def exports(digits, teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("variants")
    data = CompressionData(digits.members.x, digits.members.y)
    with VariantExporter(teacher, data, out, seed=0) as exporter:
        return {spec.name: exporter.export(spec) for spec in parse_variants(SPECS)}


def _kernel_sparsity(export) -> dict[str, float]:
    return {row["layer"]: row["sparsity"] for row in export.summary["layer_sparsity"]}


@pytest.mark.parametrize("name,target", [("prune:0.5:epochs=4", 0.5), ("prune:0.8:epochs=4+int8", 0.8)])
def test_global_pruning_reaches_sparsity(exports, name, target):
    rows = exports[name].summary["layer_sparsity"]
    zeros = sum(row["zeros"] for row in rows)
    size = sum(row["size"] for row in rows)
    assert abs(zeros / size - target) <= 0.01


def test_layer_pruning_reaches_sparsity_per_layer(exports):
    for layer, sparsity in _kernel_sparsity(exports["prune:0.7:scope=layer:epochs=4"]).items():
        assert abs(sparsity - 0.7) <= 0.01, layer


@pytest.mark.parametrize("name,target", [("prune:0.5:epochs=4", 0.5), ("prune:0.8:epochs=4+int8", 0.8),
                                         ("prune:0.7:scope=layer:epochs=4", 0.7)])
def test_pruned_zeros_survive_export(exports, name, target):
    files = exports[name].summary["files"]
    assert set(files) == {"tflite", "onnx"}
    for model_format, entry in files.items():
        sparsity = entry["weight_sparsity"]
        assert sparsity["unread_tensors"] == 0, model_format
        # Quantization may round more small weights to zero, never fewer.
        assert target - 0.01 <= sparsity["sparsity"] <= target + 0.02, model_format


def test_structured_pruning_shrinks_model_and_files(exports):
    full = exports["float"].summary
    narrow = exports["prune-structured:0.5:epochs=4"].summary
    assert narrow["parameter_count"] < 0.5 * full["parameter_count"]
    for model_format in ("tflite", "onnx"):
        assert narrow["files"][model_format]["bytes"] < 0.5 * full["files"][model_format]["bytes"]
    tflite_model = read_model(exports["prune-structured:0.5:epochs=4"].artifacts["tflite"].path)[0]
    conv_outputs = sorted(
        tflite_model.tensors[op.inputs[1]].shape[0] for op in tflite_model.operators if op.kind == "CONV_2D"
    )
    assert conv_outputs == [8, 16]
    import onnx

    graph = onnx.load(str(exports["prune-structured:0.5:epochs=4"].artifacts["onnx"].path)).graph
    shapes = {tuple(init.dims) for init in graph.initializer}
    assert (8, 1, 3, 3) in shapes
    assert (16, 8, 3, 3) in shapes


def test_distilled_student_is_narrower(exports):
    summary = exports["distill:0.5:epochs=4+int4"].summary
    assert summary["parameter_count"] < 0.5 * exports["float"].summary["parameter_count"]
    assert summary["keras_model"]["path"] == "distill_0.5_epochs=4.keras"


def test_int4_onnx_has_matmulnbits(exports):
    files = exports["int4"].summary["files"]
    assert "com.microsoft.MatMulNBits" in files["onnx"]["operators"]
    assert "MatMul" not in files["onnx"]["operators"]
    assert "Gemm" not in files["onnx"]["operators"]


def test_int16x8_is_tflite_only(exports):
    export = exports["int16x8"]
    assert set(export.artifacts) == {"tflite"}
    assert export.summary["notes"] == ["int16x8 is a TFLite mode; no ONNX file is written"]


def test_float_exports_match_keras(exports):
    for name in ("float", "prune:0.5:epochs=4", "prune-structured:0.5:epochs=4"):
        for model_format, entry in exports[name].summary["files"].items():
            assert entry["max_abs_difference_from_keras"] < 1e-3, (name, model_format)


# Variants whose files the native kernel does not run: int16 activations,
# dynamic-range (hybrid) ops, and 4-bit TFLite weights.
NATIVE_UNSUPPORTED = {("int16x8", "tflite"), ("int8-dynamic", "tflite"),
                      ("int4", "tflite"), ("distill:0.5:epochs=4+int4", "tflite")}


@pytest.mark.parametrize("name", [parse_variant(text).name for text in SPECS])
def test_every_file_runs_on_its_runtimes(exports, digits, name):
    from edgemia.runtime.capture import run_capture

    records = digits.nonmembers
    for model_format, artifact in exports[name].artifacts.items():
        accuracies = {}
        for backend, formats in BACKEND_FORMATS.items():
            if model_format not in formats:
                continue
            if backend == "native" and (name, model_format) in NATIVE_UNSUPPORTED:
                with pytest.raises(UnsupportedModelError):
                    NativeSession(read_model(artifact.path)[0])
                continue
            accuracies[backend] = run_capture(artifact.path, records, backend, threads=2).accuracy
        assert len(accuracies) >= 1
        # Short training still classifies most digits (chance is 0.1); a broken export would not.
        assert min(accuracies.values()) > 0.5, (model_format, accuracies)


def test_native_int8_equals_runtime(exports, digits):
    for model_format, backend in (("tflite", "litert"), ("onnx", "onnxruntime")):
        path = exports["prune:0.8:epochs=4+int8"].artifacts[model_format].path
        model = read_model(path)[0]
        x = quantize_input(digits.nonmembers.x, model.input())
        from edgemia.runtime.capture import open_session

        native, runtime = NativeSession(model, threads=2), open_session(model, backend, threads=2)
        try:
            np.testing.assert_array_equal(native.run(x), runtime.run(x))
        finally:
            runtime.close()


@pytest.mark.parametrize("text", ["prune:0.5:epochs=2+int8", "distill:0.5:epochs=2+int4",
                                  "prune-structured:0.5:epochs=2"])
def test_same_seed_same_files(digits, teacher, tmp_path, text):
    spec = parse_variant(text)
    data = CompressionData(digits.members.x, digits.members.y)
    digests = []
    for attempt in range(2):
        with VariantExporter(teacher, data, tmp_path / str(attempt), seed=3) as exporter:
            export = exporter.export(spec)
        digests.append({fmt: artifact.sha256 for fmt, artifact in export.artifacts.items()})
    assert digests[0] == digests[1]


def test_population_transfer_needs_records(digits, teacher, tmp_path):
    from edgemia.errors import InputError

    data = CompressionData(digits.members.x, digits.members.y)
    with VariantExporter(teacher, data, tmp_path, seed=0) as exporter:
        with pytest.raises(InputError, match="needs population records"):
            exporter.export(parse_variant("distill:0.5:data=population:epochs=1"))


def test_reader_names_quantizer_dequantize(exports, tmp_path):
    from ai_edge_quantizer import qtyping, quantizer

    engine = quantizer.Quantizer(str(exports["float"].artifacts["tflite"].path))
    engine.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.FULLY_CONNECTED, num_bits=8)
    path = tmp_path / "weight-only.tflite"
    path.write_bytes(bytes(engine.quantize().quantized_model))
    kinds = [op.kind for op in read_model(path)[0].operators]
    assert "DEQUANTIZE" in kinds
    assert "ADD" not in kinds
