"""Export a trained model as variants: model steps (pruning, distillation), then one export step per format.

A variant (see edgemia.compression.spec) gives one file per format it
exports:

| export step  | tflite                                         | onnx                                          |
|--------------|------------------------------------------------|-----------------------------------------------|
| float        | float32 (TFLite converter)                     | float32 (Keras's exporter through tf2onnx)    |
| int8         | full-integer int8 with int8 input and output   | QDQ int8, per-channel weights (quantize_static) |
| int8-dynamic | dynamic-range: int8 weights, float activations | quantize_dynamic: ConvInteger, MatMulInteger  |
| int16x8      | 16-bit activations, 8-bit weights              | none                                          |
| int4         | 4-bit block-wise FULLY_CONNECTED weights, when ai-edge-quantizer is installed | MatMulNBits |

Every quantizer calibrates on the model's own training records. Training
steps (defenses) train the model anew on them from the recipe
(edgemia.training.defenses), and the model steps after them start from that
model. Model steps run on those records too (distill:...:data=population on the population
records), seeded from the model's seed and the canonical text of the steps so
far, so a step's result does not depend on which other variants are exported.
Exports of one model share work: each prefix of model steps is applied once,
and each float file is written once.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgemia.compression.inspection import operator_list, weight_sparsity
from edgemia.compression.pruning import FineTuning
from edgemia.compression.spec import TRAINING_STEP, VariantSpec
from edgemia.errors import EdgemiaError, InputError
from edgemia.util import atomic_write_bytes, sha256_file

logger = logging.getLogger(__name__)

FORMATS = ("tflite", "onnx")
SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx"}

# Mixed into the seed of each model step, apart from the training streams.
_STEP_STREAM = 0x5E7C

# Records of the float check: the first ones of the calibration set.
_CHECK_RECORDS = 256


class ExportCheckError(EdgemiaError):
    """A float export whose outputs differ from the Keras model's: a converter bug, not a user error."""


@dataclass(frozen=True)
class Artifact:
    """An exported model file and its identity."""

    path: Path
    sha256: str
    bytes: int
    format: str = "tflite"

    def to_dict(self, relative_to: Path | None = None) -> dict:
        path = self.path.relative_to(relative_to) if relative_to else self.path
        return {"path": str(path), "format": self.format, "sha256": self.sha256, "bytes": self.bytes}


@dataclass
class CompressionData:
    """The records compression uses for one model: its training records, and optional population records."""

    x: np.ndarray  # training records: calibration, fine-tuning and the default transfer set
    y: np.ndarray
    population_x: np.ndarray | None = None
    record_id: np.ndarray | None = None  # ids of the training records, reported by pate
    population_record_id: np.ndarray | None = None  # ids of the population records, reported by pate


@dataclass
class VariantExport:
    """One exported variant: its files by format, and its summary for the report."""

    spec: VariantSpec
    artifacts: dict[str, Artifact]
    summary: dict = field(default_factory=dict)


def step_seed(seed: int, prefix: str) -> int:
    """Seed of the model step whose canonical chain up to and including it is `prefix`."""
    digest = int.from_bytes(hashlib.sha256(prefix.encode("utf-8")).digest()[:8], "little")
    state = np.random.SeedSequence([_STEP_STREAM, seed, digest]).generate_state(1, dtype=np.uint32)
    return int(state[0])


class VariantExporter:
    """Exports one trained Keras model as any number of variants into `out_dir`.

    File names are `<slug>.tflite` and `<slug>.onnx` for a variant, and
    `<prefix slug>.keras` for the Keras model after each chain of model
    steps. Summaries give paths relative to `root` (default: `out_dir`).
    Call close() (or use it as a context manager) to remove scratch files.
    """

    def __init__(self, model, data: CompressionData, out_dir: Path, seed: int,
                 tuning: FineTuning = FineTuning(), root: Path | None = None):
        self.out_dir = Path(out_dir)
        self.root = Path(root) if root is not None else self.out_dir
        self.data = data
        self.seed = seed
        self.tuning = tuning
        self._models = {"": model}
        self._keras_files: dict[str, Artifact] = {}
        self._float_tflite: dict[str, bytes] = {}
        self._float_onnx: dict[tuple[str, bool], Path] = {}
        self._keras_logits: dict[str, np.ndarray] = {}
        self._training: dict[str, dict] = {}  # summary of each chain of training steps, by canonical text
        self._scratch = Path(tempfile.mkdtemp(prefix="edgemia-export-"))

    def __enter__(self) -> "VariantExporter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)

    # -- model steps -------------------------------------------------------

    def model(self, spec: VariantSpec, count: int | None = None):
        """Return the Keras model after the first `count` model steps of `spec` (all by default)."""
        count = len(spec.model_steps) if count is None else count
        prefix = spec.prefix(count)
        if prefix not in self._models:
            step = spec.model_steps[count - 1]
            start = time.perf_counter()
            if step.kind == TRAINING_STEP:
                # Training steps retrain from scratch, all at once: only the first model's architecture is used.
                self._models[prefix] = self._train_defended(spec.model_steps[:count], step_seed(self.seed, prefix))
            else:
                # NOTE: model steps after dp-sgd or pate fine-tune on the training records without
                # noise, so the epsilon that dp-sgd and pate report covers the defended float model only.
                previous = self.model(spec, count - 1)
                self._models[prefix] = self._apply(step, previous, step_seed(self.seed, prefix))
            logger.info("applied %s in %.1f s", prefix, time.perf_counter() - start)
            self._save_keras(prefix)
        return self._models[prefix]

    def _train_defended(self, steps, seed: int):
        from edgemia.training.defenses import DefenseData, TrainingSettings, train_defended

        if self.tuning.epochs is None:
            raise InputError(
                f"training step '{steps[-1]}' trains the model anew from its recipe, and no recipe is known "
                "here; run training steps with `edgemia audit`, which trains with the data set's recipe"
            )
        settings = TrainingSettings(self.tuning.epochs, self.tuning.batch_size, self.tuning.learning_rate,
                                    self.tuning.recipe)
        data = DefenseData(self.data.x, self.data.y, self.data.record_id, self.data.population_x,
                           self.data.population_record_id)
        model, summary = train_defended(self._models[""], steps, data, settings, seed)
        self._training["+".join(str(step) for step in steps)] = summary
        return model

    def _apply(self, step, model, seed: int):
        from edgemia.compression.distillation import distill
        from edgemia.compression.pruning import prune_magnitude, prune_structured

        if step.word == "prune":
            return prune_magnitude(model, self.data.x, self.data.y, step["sparsity"], step["scope"],
                                   step["epochs"], self.tuning, seed)
        if step.word == "prune-structured":
            return prune_structured(model, self.data.x, self.data.y, step["fraction"], step["epochs"],
                                    self.tuning, seed)
        if step["data"] == "population":
            if self.data.population_x is None or len(self.data.population_x) == 0:
                raise InputError(
                    f"{step} needs population records, and none were given; with `edgemia audit` set "
                    "--population FRACTION, with `edgemia compress` pass --population RECORDS.npz"
                )
            transfer = self.data.population_x
        else:
            transfer = self.data.x
        return distill(model, transfer, step["width"], step["temperature"], step["epochs"], self.tuning, seed)

    def _save_keras(self, prefix: str) -> None:
        path = self.out_dir / f"{prefix.replace(':', '_')}.keras"
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self._scratch / path.name
        self._models[prefix].save(scratch)
        atomic_write_bytes(path, scratch.read_bytes())
        self._keras_files[prefix] = Artifact(path=path, sha256=sha256_file(path), bytes=path.stat().st_size,
                                             format="keras")

    # -- float files shared by the export steps ----------------------------

    def float_tflite(self, spec: VariantSpec) -> bytes:
        from edgemia.compression.tflite_export import export_float

        prefix = spec.prefix(len(spec.model_steps))
        if prefix not in self._float_tflite:
            self._float_tflite[prefix] = export_float(self.model(spec))
        return self._float_tflite[prefix]

    def float_onnx(self, spec: VariantSpec, fuse: bool = True) -> Path:
        """Path of the float ONNX file: fused (Gemm) for float and int8, unfused (MatMul) for int4."""
        from edgemia.compression.onnx_export import export_float

        prefix = spec.prefix(len(spec.model_steps))
        key = (prefix, fuse)
        if key not in self._float_onnx:
            path = self._scratch / f"{len(self._float_onnx)}-{'fused' if fuse else 'unfused'}.onnx"
            export_float(self.model(spec), path, fuse=fuse)
            self._float_onnx[key] = path
        return self._float_onnx[key]

    # -- export steps -------------------------------------------------------

    def export(self, spec: VariantSpec) -> VariantExport:
        """Write every file of variant `spec` and return them with the variant's summary."""
        start = time.perf_counter()
        model = self.model(spec)
        files, notes = self._export_files(spec)
        artifacts = {}
        for model_format in FORMATS:
            if model_format not in files:
                continue
            path = self.out_dir / f"{spec.slug}{SUFFIXES[model_format]}"
            source = files[model_format]
            atomic_write_bytes(path, source if isinstance(source, bytes) else Path(source).read_bytes())
            artifacts[model_format] = Artifact(path=path, sha256=sha256_file(path), bytes=path.stat().st_size,
                                               format=model_format)

        from edgemia.compression.chain import parameter_count
        from edgemia.compression.pruning import layer_sparsity

        summary = {
            "spec": spec.to_dict(),
            "parameter_count": parameter_count(model),
            "layer_sparsity": layer_sparsity(model),
            "keras_model": None,
            "files": {},
            "notes": notes,
        }
        prefix = spec.prefix(len(spec.model_steps))
        if prefix in self._keras_files:
            summary["keras_model"] = self._keras_files[prefix].to_dict(relative_to=self.root)
        for model_format, artifact in artifacts.items():
            entry = {
                **artifact.to_dict(relative_to=self.root),
                "operators": operator_list(artifact.path, model_format),
                "weight_sparsity": weight_sparsity(artifact.path, model_format),
            }
            if spec.export.word == "float":
                entry["max_abs_difference_from_keras"] = self._check_float(spec, artifact)
            summary["files"][model_format] = entry
        summary["training"] = self._training.get(spec.defense) if spec.defense else None
        summary["seconds"] = time.perf_counter() - start
        return VariantExport(spec=spec, artifacts=artifacts, summary=summary)

    def _export_files(self, spec: VariantSpec) -> tuple[dict[str, bytes | Path], list[str]]:
        from edgemia.compression import onnx_export, tflite_export

        word = spec.export.word
        model = self.model(spec)
        calibration = self.data.x
        scratch = self._scratch / f"{spec.slug}.onnx"
        notes: list[str] = []
        files: dict[str, bytes | Path] = {}
        if word == "float":
            files["tflite"] = self.float_tflite(spec)
            files["onnx"] = self.float_onnx(spec)
        elif word == "int8":
            files["tflite"] = tflite_export.export_int8(model, calibration)
            onnx_export.export_int8(self.float_onnx(spec), calibration, scratch, method=spec.export["calibration"])
            files["onnx"] = scratch
        elif word == "int8-dynamic":
            files["tflite"] = tflite_export.export_dynamic_range(model)
            onnx_export.export_dynamic(self.float_onnx(spec), scratch)
            files["onnx"] = scratch
        elif word == "int16x8":
            files["tflite"] = tflite_export.export_int16x8(model, calibration)
            notes.append("int16x8 is a TFLite mode; no ONNX file is written")
        elif word == "int4":
            if tflite_export.int4_available():
                tflite_file, int4_notes = tflite_export.export_int4(self.float_tflite(spec), spec.export["block"])
                notes += int4_notes
                if tflite_file is None:
                    notes.append("no FULLY_CONNECTED layer can be quantized to int4, so no TFLite file is written")
                else:
                    files["tflite"] = tflite_file
            else:
                notes.append("ai-edge-quantizer is not installed, so no int4 TFLite file is written")
                logger.warning("ai-edge-quantizer is not installed; %s gets no TFLite file", spec.name)
            onnx_export.export_int4(self.float_onnx(spec, fuse=False), scratch, block_size=spec.export["block"])
            files["onnx"] = scratch
        else:  # pragma: no cover - the grammar admits no other export word
            raise ValueError(f"unknown export step {word}")
        return files, notes

    def _check_float(self, spec: VariantSpec, artifact: Artifact) -> float:
        """Compare a float file's outputs with the Keras model's; raise ExportCheckError when they differ.

        The tolerance, 1e-4 times the largest logit magnitude (at least 1),
        allows for a different order of float32 additions.
        """
        prefix = spec.prefix(len(spec.model_steps))
        x = np.asarray(self.data.x[:_CHECK_RECORDS], dtype=np.float32)
        if prefix not in self._keras_logits:
            from edgemia._stderr import native_stderr_to_log

            with native_stderr_to_log("TensorFlow inference"):
                self._keras_logits[prefix] = self.model(spec).predict(x, batch_size=1024, verbose=0)
        expected = self._keras_logits[prefix]
        got = _run_in_process(artifact.path, artifact.format, x)
        difference = float(np.max(np.abs(got - expected)))
        tolerance = 1e-4 * max(1.0, float(np.max(np.abs(expected))))
        if not difference <= tolerance:
            raise ExportCheckError(
                f"{artifact.path}: the exported float model differs from the Keras model by up to "
                f"{difference:.3g} on {len(x)} records (tolerance {tolerance:.3g}); the converter changed "
                "the model's function"
            )
        return difference


def _run_in_process(path: Path, model_format: str, x: np.ndarray) -> np.ndarray:
    """Run a float file edgemia just wrote, in this process (LiteRT or ONNX Runtime)."""
    from edgemia._stderr import native_stderr_to_log

    if model_format == "onnx":
        import onnxruntime as ort

        with native_stderr_to_log("ONNX Runtime"):
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    from ai_edge_litert.interpreter import Interpreter

    with native_stderr_to_log("LiteRT"):
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        details = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(details["index"], [len(x), *details["shape"][1:]], strict=False)
        interpreter.allocate_tensors()
        interpreter.set_tensor(details["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


def export_variants(specs: list[VariantSpec], model, data: CompressionData, out_dir: Path, seed: int,
                    tuning: FineTuning = FineTuning(), root: Path | None = None) -> dict[str, VariantExport]:
    """Export `model` as each variant into `out_dir`; returns the exports by canonical name."""
    with VariantExporter(model, data, out_dir, seed, tuning, root) as exporter:
        return {spec.name: exporter.export(spec) for spec in specs}
