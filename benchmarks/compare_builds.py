"""Compare two builds of the native kernel on one benchmark model, in alternating runs.

Usage:
    python benchmarks/compare_builds.py A.so B.so --model mlp-784-1024-1024-10 --batch 1024 \
        --threads 1 --isa amx [--isa-b avx512vnni] [--rounds 4]

A.so and B.so are copies of edgemia/_native*.so from two builds (or the same file, with
--isa-b naming another instruction-set path). Each round runs A, then B, each in a fresh
process that loads that file in place of edgemia._native, and prints records per second
(the best of five timed stretches) and the ratio B / A. Shared machines drift, so only
ratios from the same round mean much. The models are those of benchmarks/kernel.py,
exported once to --models.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_one(library: str, model_name: str, batch: int, threads: int, isa: str, models: Path) -> float:
    """Return records per second of one build, measured in this process."""
    import edgemia

    spec = importlib.util.spec_from_file_location("edgemia._native", library)
    native = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(native)
    sys.modules["edgemia._native"] = native
    edgemia._native = native
    sys.path.insert(0, str(HERE))
    import numpy as np

    import kernel
    from edgemia.runtime.tflite_model import read_tflite

    path = models / f"{model_name}.tflite"
    if not path.exists():
        models.mkdir(parents=True, exist_ok=True)
        kernel.export_models(models)
    if not path.exists():
        raise SystemExit(f"{model_name}: not a model of benchmarks/kernel.py; see {models} for the names")
    model = read_tflite(path)
    shape = model.tensors[model.inputs[0]].shape
    x = np.random.default_rng(1).integers(-128, 128, size=(batch, *shape[1:]), dtype=np.int8)
    run = kernel.native_runner(model, isa, threads, x)
    run()
    return batch / min(kernel.time_calls(run, 0.2) for _ in range(5))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="first build's _native library")
    parser.add_argument("b", help="second build's _native library")
    parser.add_argument("--model", default="mlp-784-1024-1024-10", help="benchmark model name")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--isa", default="avx512vnni", help="instruction-set path of A (and of B without --isa-b)")
    parser.add_argument("--isa-b", help="instruction-set path of B")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--models", type=Path, default=Path("runs/bench-models"),
                        help="folder for the exported models (default runs/bench-models)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child process: measure A only
    args = parser.parse_args(argv)

    if args.one:
        print(run_one(args.a, args.model, args.batch, args.threads, args.isa, args.models))
        return 0
    for library in (args.a, args.b):
        if not Path(library).is_file():
            raise SystemExit(f"{library}: file not found; pass a copy of a build's edgemia/_native*.so")
    ratios = []
    for round_number in range(1, args.rounds + 1):
        rates = []
        for library, isa in ((args.a, args.isa), (args.b, args.isa_b or args.isa)):
            command = [sys.executable, __file__, library, library, "--one", "--model", args.model, "--batch",
                       str(args.batch), "--threads", str(args.threads), "--isa", isa, "--models", str(args.models)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{library} ({isa}) failed:\n{done.stderr.strip()}")
            rates.append(float(done.stdout.split()[-1]))
        ratios.append(rates[1] / rates[0])
        print(f"round {round_number}: A {rates[0]:,.0f}  B {rates[1]:,.0f} records/s  B/A {ratios[-1]:.3f}")
    print(f"median B/A over {len(ratios)} rounds: {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
