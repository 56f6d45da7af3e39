"""Benchmark the native kernel against LiteRT and ONNX Runtime and write BENCHMARKS.md.

Usage: .venv/bin/python benchmarks/kernel.py [--rounds N] [--seconds S] [--out PATH]

Builds four Keras models and exports them with edgemia's full-integer int8 export:
a tabular MLP, the digits CNN, a 32x32x3 CNN with depthwise convolutions and
pooling, and a GEMM-bound MLP 784-1024-1024-10. Their weights are the untrained
initial ones, because speed does not depend on the values. Each model runs at
batch 1, 64 and 1024 with 1 and 2 threads on LiteRT (the ai-edge-litert
Interpreter with its default op resolver) and on the native kernel with every
instruction-set path this CPU has. Each model's ONNX twin (int8 QDQ, and int4
MatMulNBits for the MLPs) runs on ONNX Runtime and on the native kernel. It
also measures each path's int8 multiply-accumulate peak and reports the
GEMM-bound MLP's fraction of it.

Timing: one call is `session.run(x)` for the native kernel and
`set_tensor`, `invoke`, `get_tensor` for LiteRT, on the same int8 records. A
round repeats calls for --seconds, and the backends take turns in every round.
The result is the best round, because that is the estimate least disturbed by
other processes on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BATCHES = (1, 64, 1024)
THREADS = (1, 2)
GEMM_BOUND = "mlp-784-1024-1024-10"
SMALL_MODELS = ("tabular-mlp", "digits-cnn", "cnn32-depthwise")


# ---------------------------------------------------------------------------
# Models


def build_models() -> dict[str, object]:
    """Return the Keras models by name, with seeded initial weights."""
    from edgemia._tf import import_keras
    from edgemia.training.models import digits_cnn, tabular_mlp

    keras = import_keras()
    layers = keras.layers
    keras.utils.set_random_seed(0)

    x = keras.Input((32, 32, 3), name="x")
    h = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    h = layers.DepthwiseConv2D(3, padding="same", activation="relu")(h)
    h = layers.Conv2D(32, 1, activation="relu")(h)
    h = layers.MaxPooling2D(2)(h)
    h = layers.DepthwiseConv2D(3, strides=2, padding="same", activation="relu")(h)
    h = layers.Conv2D(64, 1, activation="relu")(h)
    h = layers.AveragePooling2D(2)(h)
    cnn32 = keras.Model(x, layers.Dense(10, name="logits")(layers.Flatten()(h)), name="cnn32")

    x = keras.Input((784,), name="x")
    h = layers.Dense(1024, activation="relu")(x)
    h = layers.Dense(1024, activation="relu")(h)
    mlp = keras.Model(x, layers.Dense(10, name="logits")(h), name="mlp")

    return {
        "tabular-mlp": tabular_mlp((30,), 2),
        "digits-cnn": digits_cnn((8, 8, 1), 10),
        "cnn32-depthwise": cnn32,
        GEMM_BOUND: mlp,
    }


def export_models(folder: Path) -> dict[str, Path]:
    """Export every model to int8 TFLite in `folder`, calibrated on 100 random records."""
    from edgemia.compression.tflite_export import export_int8

    paths = {}
    rng = np.random.default_rng(0)
    for name, model in build_models().items():
        shape = tuple(int(d) for d in model.inputs[0].shape[1:])
        calibration = rng.normal(size=(100, *shape)).astype(np.float32)
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(export_int8(model, calibration))
    return paths


def macs_per_record(model) -> int:
    """int8 multiply-accumulates of one record in CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED."""
    total = 0
    for op in model.operators:
        if op.kind not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        filter_shape = model.tensors[op.inputs[1]].shape
        outputs = int(np.prod(model.tensors[op.outputs[0]].shape[1:]))
        if op.kind == "FULLY_CONNECTED":
            total += outputs * filter_shape[1]
        elif op.kind == "CONV_2D":
            total += outputs * filter_shape[1] * filter_shape[2] * filter_shape[3]
        else:
            total += outputs * filter_shape[1] * filter_shape[2]
    return total


# ---------------------------------------------------------------------------
# Backends


@contextlib.contextmanager
def selected_isa(isa: str):
    """Set EDGEMIA_ISA while a native session is created; the graph reads it then."""
    previous = os.environ.get("EDGEMIA_ISA")
    os.environ["EDGEMIA_ISA"] = isa
    try:
        yield
    finally:
        if previous is None:
            del os.environ["EDGEMIA_ISA"]
        else:
            os.environ["EDGEMIA_ISA"] = previous


def native_runner(model, isa: str, threads: int, x: np.ndarray):
    from edgemia.runtime.native import NativeSession

    with selected_isa(isa):
        session = NativeSession(model, threads=threads)
    assert session.isa == isa
    return lambda: session.run(x)


def litert_runner(path: Path, threads: int, x: np.ndarray):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    index = interpreter.get_input_details()[0]["index"]
    output = interpreter.get_output_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(x.shape))
    interpreter.allocate_tensors()

    def run():
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        return interpreter.get_tensor(output)

    return run


def onnxruntime_runner(path: Path, threads: int, x: np.ndarray):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: x})[0]


def export_onnx_models(folder: Path) -> dict[tuple[str, str], Path]:
    """Export the ONNX twins: int8 QDQ for every model, int4 MatMulNBits for the MLPs."""
    from edgemia.compression.onnx_export import export_float, export_int4, export_int8

    paths = {}
    rng = np.random.default_rng(0)
    for name, model in build_models().items():
        shape = tuple(int(d) for d in model.inputs[0].shape[1:])
        calibration = rng.normal(size=(100, *shape)).astype(np.float32)
        export_float(model, folder / f"{name}.onnx")
        paths[name, "int8"] = folder / f"{name}-int8.onnx"
        export_int8(folder / f"{name}.onnx", calibration, paths[name, "int8"])
        if "mlp" in name:
            export_float(model, folder / f"{name}-unfused.onnx", fuse=False)
            paths[name, "int4"] = folder / f"{name}-int4.onnx"
            export_int4(folder / f"{name}-unfused.onnx", paths[name, "int4"])
    return paths


# ---------------------------------------------------------------------------
# Measurement


@dataclass
class Result:
    model: str
    batch: int
    threads: int
    seconds: dict[str, float] = field(default_factory=dict)  # best seconds per call, by backend
    weights: str = "int8"  # int8, or int4 for MatMulNBits models
    max_difference: float = 0.0  # largest |native - ONNX Runtime| output difference (int4 only)

    def records_per_second(self, backend: str) -> float:
        return self.batch / self.seconds[backend]


def time_calls(run, seconds: float) -> float:
    """Seconds per call, averaged over calls repeated for about `seconds`."""
    calls, start = 0, time.perf_counter()
    while True:
        run()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / calls


def measure(runners: dict[str, object], rounds: int, seconds: float) -> dict[str, float]:
    """Best seconds per call of each runner over `rounds` rounds in which they take turns."""
    best = {name: float("inf") for name in runners}
    for run in runners.values():
        run()  # warm-up: allocation, thread start, caches
    for _ in range(rounds):
        for name, run in runners.items():
            # Let the previous backend's spinning worker threads go idle.
            time.sleep(0.02)
            best[name] = min(best[name], time_calls(run, seconds))
    return best


def measure_peaks(isas: list[str]) -> dict[tuple[str, int], float]:
    """Peak int8 GMAC/s of each path at each thread count."""
    from edgemia import _native

    return {(isa, threads): _native.int8_peak_gmacs(isa, threads) for isa in isas for threads in THREADS}


def check_outputs_equal(runners: dict[str, object], model: str) -> None:
    reference = runners["litert"]()
    for name, run in runners.items():
        if not np.array_equal(run(), reference):
            raise SystemExit(f"{model}: {name} output differs from LiteRT's; the benchmark compares equal work only")


# ---------------------------------------------------------------------------
# Report


def machine_description(start_load: tuple[float, ...]) -> str:
    """CPU name, family and model, the instruction-set flags the GEMM paths use, and the load at start and end."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    cpu = fields.get("model name", platform.processor() or platform.machine())
    if "cpu family" in fields:
        cpu += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "amx_int8", "asimd", "asimddp")
    present = set(fields.get("flags", fields.get("Features", "")).split())
    flags = " ".join(flag for flag in wanted if flag in present) or "none of interest"
    start = ", ".join(f"{v:.1f}" for v in start_load)
    end = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.machine()}, "
            f"flags {flags}; load average (1, 5, 15 minutes) {start} at start and {end} at the end")


def has_amx() -> bool:
    """Return whether this CPU reports AMX int8 tiles (amx_int8 in /proc/cpuinfo)."""
    with contextlib.suppress(OSError):
        return " amx_int8" in Path("/proc/cpuinfo").read_text()
    return False


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"Python {platform.python_version()}"]
    for package in ("edgemia", "ai-edge-litert", "onnxruntime", "numpy", "tensorflow-cpu"):
        with contextlib.suppress(PackageNotFoundError):
            parts.append(f"{package} {version(package)}")
    return ", ".join(parts)


def format_rate(value: float) -> str:
    return f"{value:,.0f}"


def results_table(results: list[Result], isas: list[str], onnx: list[Result]) -> list[str]:
    native = [f"native {isa}" for isa in isas]
    header = ["model", "batch", "threads", "LiteRT", *native, "best native / LiteRT", "ONNX Runtime (int8 QDQ)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        rates = [format_rate(r.records_per_second(b)) for b in ("litert", *native)]
        best = max(r.records_per_second(b) for b in native)
        ratio = best / r.records_per_second("litert")
        twin = next((o for o in onnx if (o.model, o.batch, o.threads, o.weights) == (r.model, r.batch, r.threads, "int8")),
                    None)
        ort = format_rate(twin.records_per_second("onnxruntime")) if twin else "n/a"
        lines.append(f"| {r.model} | {r.batch} | {r.threads} | " + " | ".join(rates) + f" | {ratio:.2f} | {ort} |")
    return lines


def onnx_table(onnx: list[Result], best_isa: str) -> list[str]:
    lines = ["| model | weights | batch | threads | ONNX Runtime | native | native / ONNX Runtime | "
             "largest output difference |", "|---|---|---|---|---|---|---|---|"]
    for r in onnx:
        native = f"native {best_isa}"
        ratio = r.records_per_second(native) / r.records_per_second("onnxruntime")
        difference = "0 (identical)" if r.weights == "int8" else f"{r.max_difference:.2g}"
        lines.append(f"| {r.model} | {r.weights} | {r.batch} | {r.threads} | "
                     f"{format_rate(r.records_per_second('onnxruntime'))} | {format_rate(r.records_per_second(native))} | "
                     f"{ratio:.2f} | {difference} |")
    return lines


def peak_table(results: list[Result], peaks: dict[tuple[str, int], float], macs: int) -> list[str]:
    lines = ["| path | threads | measured peak GMAC/s | MLP batch 1024 GMAC/s | fraction of peak |",
             "|---|---|---|---|---|"]
    for (isa, threads), peak in peaks.items():
        r = next(r for r in results if r.model == GEMM_BOUND and r.batch == 1024 and r.threads == threads)
        achieved = macs / r.seconds[f"native {isa}"] * r.batch / 1e9
        lines.append(f"| {isa} | {threads} | {peak:.0f} | {achieved:.0f} | {achieved / peak:.0%} |")
        if isa == list(peaks)[-1][0]:
            litert = macs / r.seconds["litert"] * r.batch / 1e9
            lines.append(f"| LiteRT (against the {isa} peak) | {threads} | {peak:.0f} | {litert:.0f} | "
                         f"{litert / peak:.0%} |")
    return lines


def target_lines(results: list[Result], peaks: dict[tuple[str, int], float], macs: int, best_isa: str,
                 onnx: list[Result]) -> list[str]:
    native = f"native {best_isa}"
    lines = []
    for threads in THREADS:
        r = next(r for r in results if r.model == GEMM_BOUND and r.batch == 1024 and r.threads == threads)
        twin = next((o for o in onnx if (o.model, o.batch, o.threads, o.weights) == (GEMM_BOUND, 1024, threads, "int8")),
                    None)
        fastest = r.seconds["litert"] if twin is None else min(r.seconds["litert"], twin.seconds["onnxruntime"])
        ratio = fastest / r.seconds[native]
        fraction = macs / r.seconds[native] * r.batch / 1e9 / peaks[(best_isa, threads)]
        lines.append(f"- {GEMM_BOUND}, batch 1024, {threads} thread(s): {best_isa} runs at {ratio:.2f}x the faster "
                     f"of LiteRT and ONNX Runtime "
                     f"(target at least 1.00x: {'met' if ratio >= 1 else 'not met'}) and at {fraction:.0%} "
                     f"of the measured peak (target at least 70%: {'met' if fraction >= 0.7 else 'not met'}).")
    for model in SMALL_MODELS:
        for r in (r for r in results if r.model == model):
            twin = next((o for o in onnx if (o.model, o.batch, o.threads, o.weights) == (model, r.batch, r.threads,
                                                                                          "int8")), None)
            fastest = r.seconds["litert"] if twin is None else min(r.seconds["litert"], twin.seconds["onnxruntime"])
            ratio = fastest / r.seconds[native]
            lines.append(f"- {model}, batch {r.batch}, {r.threads} thread(s): {ratio:.2f}x the faster of LiteRT and "
                         f"ONNX Runtime (target at least 1.50x: {'met' if ratio >= 1.5 else 'not met'}).")
    int4 = [o for o in onnx if o.weights == "int4"]
    if int4:
        worst = max(o.max_difference for o in int4)
        lines.append(f"- int4 (MatMulNBits): the native output differs from ONNX Runtime's by at most {worst:.2g} "
                     "(both dequantize the weights and multiply in float32; the order of additions differs).")
    return lines


BEGIN_MARK = "<!-- begin kernel: written by benchmarks/kernel.py -->"
END_MARK = "<!-- end kernel -->"


def replace_section(out: Path, section: str) -> None:
    """Write `section` between this script's markers in `out`, keeping the rest of the page."""
    page = out.read_text() if out.exists() else "# Benchmarks\n"
    block = f"{BEGIN_MARK}\n{section.rstrip()}\n{END_MARK}\n"
    if BEGIN_MARK in page and END_MARK in page:
        before = page[: page.index(BEGIN_MARK)]
        after = page[page.index(END_MARK) + len(END_MARK) :].lstrip("\n")
        page = before + block + (f"\n{after}" if after else "")
    else:
        page = page.rstrip() + "\n\n" + block
    out.write_text(page)


def write_report(out: Path, command: str, results, isas, peaks, macs, onnx, onnx_skipped, start_load) -> str:
    best_isa = isas[-1]
    text = "\n".join([
        "## The native kernel",
        "",
        "Records per second of the native kernel and of LiteRT on int8 models, and the native",
        "GEMM's fraction of the measured int8 peak. Written by `benchmarks/kernel.py`.",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {machine_description(start_load)}",
        f"- Versions: {versions()}",
        "",
        "Each cell is the best of several rounds in which the backends take turns; a round",
        "repeats calls for a fixed time. One native call is `NativeSession.run(x)`, one",
        "LiteRT call `set_tensor`, `invoke` and `get_tensor` on the default op resolver",
        "(XNNPACK). Both get the same int8 records and return the same bytes, which the",
        "script checks. The models are untrained, since speed does not depend on the",
        "weights. Other processes may share the machine, so compare ratios within one run.",
        "",
        "### Records per second",
        "",
        *results_table(results, isas, onnx),
        "",
        "The ONNX Runtime column runs each model's ONNX twin (Keras's ONNX export quantized by",
        "ONNX Runtime's quantize_static to int8 QDQ form, float input), so it includes the",
        "quantization of the input and the dequantization of the output.",
        "",
        "### ONNX models",
        "",
        f"The native kernel on the same ONNX files as ONNX Runtime (onnxruntime numerics, {best_isa} path).",
        "int8 outputs must be identical; int4 (MatMulNBits, block 32) outputs agree up to float rounding.",
        "",
        *onnx_table(onnx, best_isa),
        "",
        *(["Not run on the native kernel: " + "; ".join(onnx_skipped) + ".", ""] if onnx_skipped else []),
        "### GEMM fraction of the int8 peak",
        "",
        f"{GEMM_BOUND} does {macs:,} int8 multiply-accumulates per record. The peak is",
        "`edgemia._native.int8_peak_gmacs(path, threads)`: a register-only loop of the path's",
        "multiply-accumulate instructions (tdpbusd on 16 x 16 tiles for amx, vpdpbusd zmm for",
        "avx512vnni, vpmaddwd and vpaddd for avx2), the best of three runs, taken before and",
        "after the models ran.",
        "",
        *peak_table(results, peaks, macs),
        "",
        *(["This CPU has AMX int8 tiles (amx_int8), but this build or the operating system does",
           "not let the native kernel use them, so the peak above counts vpdpbusd alone and a",
           "runtime that uses tiles can exceed it.",
           ""] if has_amx() and "amx" not in isas else []),
        "### Targets",
        "",
        *target_lines(results, peaks, macs, best_isa, onnx),
        "",
        "Where the native kernel loses time on the CNNs: the avx2 and NEON paths copy each",
        "convolution's input taps into im2col rows before the GEMM, copy the rows once more",
        "when they pack them, and requantize in a second pass. In litert and onnxruntime",
        "numerics the avx512vnni path reads convolution windows in place from a padded copy",
        "of each record (XNNPACK reads them through an indirection buffer), reads the inputs",
        "of dense layers in place, and requantizes its sums in registers. Depthwise",
        "convolutions with depth multiplier 1 have AVX2 and NEON row kernels. On the",
        "avx512vnni path, filters of up to 64 taps run in a kernel that also applies the",
        "output stage in registers. The amx path runs dense layers with at least 16 rows, 5",
        "columns and a depth of 128 on AMX tiles, and its convolutions on the avx512vnni",
        "kernels. Average pooling is portable code that the compiler",
        "vectorizes for the baseline instruction set only. With two threads the kernel",
        "splits only batches with about a million multiply-accumulates per thread; smaller",
        "ones run on one.",
        "",
    ])
    replace_section(out, text)
    return text


# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per configuration (default 5)")
    parser.add_argument("--seconds", type=float, default=0.2,
                        help="seconds of repeated calls per backend and round (default 0.2)")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="report to write")
    args = parser.parse_args(argv)

    from edgemia import _native
    from edgemia.errors import UnsupportedModelError
    from edgemia.runtime.native import NativeSession
    from edgemia.runtime.onnx_model import read_onnx
    from edgemia.runtime.tflite_model import read_tflite

    start_load = os.getloadavg()
    isas = _native.available_isas()
    simd = [isa for isa in isas if isa != "scalar"]
    if not simd:
        raise SystemExit("this build and CPU have no vector GEMM path; nothing to compare against its peak")

    # The peak is taken before and after the models run, and the higher value
    # kept, so that a burst of load from other processes during one of the
    # two measurements does not inflate the fractions.
    peaks = measure_peaks(simd)
    with tempfile.TemporaryDirectory() as folder:
        print("exporting models...", flush=True)
        paths = export_models(Path(folder))
        results = []
        for name, path in paths.items():
            model = read_tflite(path)
            shape = model.input().shape[1:]
            for batch in BATCHES:
                x = np.random.default_rng(batch).integers(-128, 128, size=(batch, *shape)).astype(np.int8)
                for threads in THREADS:
                    runners = {"litert": litert_runner(path, threads, x)}
                    for isa in isas:
                        runners[f"native {isa}"] = native_runner(model, isa, threads, x)
                    check_outputs_equal(runners, name)
                    result = Result(name, batch, threads, measure(runners, args.rounds, args.seconds))
                    results.append(result)
                    rates = "  ".join(f"{b} {format_rate(result.records_per_second(b))}" for b in runners)
                    print(f"{name:22s} batch {batch:5d} threads {threads}: {rates} records/s", flush=True)
        macs = macs_per_record(read_tflite(paths[GEMM_BOUND]))

        print("exporting ONNX twins...", flush=True)
        onnx_paths = export_onnx_models(Path(folder))
        onnx_results, onnx_skipped = [], []
        best_isa = isas[-1]
        for (name, weights), path in onnx_paths.items():
            model = read_onnx(path)
            try:
                NativeSession(model)
            except UnsupportedModelError as exc:
                onnx_skipped.append(f"{name} ({weights}): {str(exc).split(': ', 1)[-1]}")
                continue
            shape = model.input().shape[1:]
            for batch in BATCHES:
                x = np.random.default_rng(batch).normal(size=(batch, *shape)).astype(np.float32)
                for threads in THREADS:
                    runners = {"onnxruntime": onnxruntime_runner(path, threads, x),
                               f"native {best_isa}": native_runner(model, best_isa, threads, x)}
                    expected, got = runners["onnxruntime"](), runners[f"native {best_isa}"]()
                    difference = float(np.abs(got - expected).max())
                    if weights == "int8" and difference != 0:
                        raise SystemExit(f"{name} int8 ONNX: native output differs from ONNX Runtime's")
                    result = Result(name, batch, threads, measure(runners, args.rounds, args.seconds), weights,
                                    difference)
                    onnx_results.append(result)
                    rates = "  ".join(f"{b} {format_rate(result.records_per_second(b))}" for b in runners)
                    print(f"{name:22s} {weights} batch {batch:5d} threads {threads}: {rates} records/s", flush=True)

    peaks = {key: max(value, later) for (key, value), later in zip(peaks.items(), measure_peaks(simd).values())}
    command = " ".join([".venv/bin/python", "benchmarks/kernel.py", *(argv if argv is not None else sys.argv[1:])])
    report = write_report(args.out, command, results, isas, peaks, macs, onnx_results, onnx_skipped, start_load)
    print(report[report.index("## GEMM fraction"):])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
