"""Time the reference-model stage for several worker counts, and the audit for several K.

Usage: .venv/bin/python benchmarks/scale.py [--workers 1,2] [--speedup-references 8]
       [--references 16,32,64] [--executor local] [-- AUDIT OPTIONS]

Every run is `edgemia audit` in a fresh process writing to a new temporary
run directory, so no task is reused. The first table compares worker counts
on the same audit. Its speed-up divides the reference stage's wall time with
the first worker count by that with each other count. The second table runs
the audit with each number K of reference models and the last worker count,
then fits wall time = a + b K by least squares. The machine's one-minute
load average before each run is printed, because other work on the machine
slows the runs down. The CPU column sums the audit's and its workers' CPU
time. The audit MB column is the audit process's peak resident set, as
its report.json gives it, and the largest MB column the largest peak of
any one process, the audit or a worker. A speed-up in wall time needs
free cores; CPU time that grows with the workers is work they add, such
as each worker starting its own TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgemia.reporting.environment import environment

SMALL_AUDIT = ["--dataset", "breast-cancer", "--epochs", "3", "--variants", "float,int8", "--backends", "native",
               "--bootstrap", "0"]


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def run_audit(references: int, workers: int, executor: str, options: list[str]) -> dict:
    """Run one audit in a fresh process; return its load at start, wall time and stage times."""
    edgemia = Path(sys.executable).parent / "edgemia"
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="edgemia-scale-") as out:
        command = [str(edgemia), "audit", "--out", out, "--jobs", str(workers), "--executor", executor,
                   "--reference-models", str(references), *options]
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        # wait4 gives the CPU time of the audit and of the worker processes it waited for.
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise subprocess.CalledProcessError(process.returncode, command)
        report = json.loads((Path(out) / "report.json").read_text())
    # ru_maxrss is in KiB on Linux: the peak of the largest process among the audit and its workers.
    return {"load": load, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "largest_mb": usage.ru_maxrss / 1024,
            "audit_mb": report["peak_memory_mb"]["audit"],
            "references": report["stage_seconds"]["references"], "computed": report["tasks"]["computed"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default: 1,2)")
    parser.add_argument("--speedup-references", type=int, default=8,
                        help="reference models of the worker comparison (default: 8)")
    parser.add_argument("--references", default="16,32,64",
                        help="comma-separated numbers of reference models K (default: 16,32,64)")
    parser.add_argument("--executor", default="local", help="local or ray (default: local)")
    parser.add_argument("audit_options", nargs="*",
                        help=f"`edgemia audit` options, after -- (default: {' '.join(SMALL_AUDIT)})")
    args = parser.parse_args()
    options = args.audit_options or SMALL_AUDIT
    workers = _numbers(args.workers)

    machine = environment()
    print(f"{machine['host']}: {machine['cpu']}, {os.cpu_count()} cores; executor {args.executor}; "
          f"options {' '.join(options)}")

    if args.speedup_references:
        print(f"\nReference stage, {args.speedup_references} reference models")
        print(f"{'workers':>7} {'load':>5} {'wall s':>7} {'CPU s':>7} {'references s':>13} {'speed-up':>9}")
        first = None
        for count in workers:
            run = run_audit(args.speedup_references, count, args.executor, options)
            first = first or run["references"]
            print(f"{count:>7} {run['load']:>5.2f} {run['wall']:>7.1f} {run['cpu']:>7.1f} "
                  f"{run['references']:>13.1f} {first / run['references']:>9.2f}")

    sizes = _numbers(args.references)
    if sizes:
        print(f"\nAudit wall time against K, {workers[-1]} workers")
        print(f"{'K':>4} {'load':>5} {'wall s':>7} {'CPU s':>7} {'references s':>13} {'s per model':>12} "
              f"{'audit MB':>9} {'largest MB':>11}")
        walls = []
        for k in sizes:
            run = run_audit(k, workers[-1], args.executor, options)
            walls.append(run["wall"])
            print(f"{k:>4} {run['load']:>5.2f} {run['wall']:>7.1f} {run['cpu']:>7.1f} "
                  f"{run['references']:>13.1f} {run['references'] / k:>12.2f} {run['audit_mb']:>9.0f} "
                  f"{run['largest_mb']:>11.0f}")
        if len(sizes) >= 2:
            slope, intercept = np.polyfit(sizes, walls, 1)
            fitted = intercept + slope * np.array(sizes)
            residual = float(np.sum((np.array(walls) - fitted) ** 2))
            total = float(np.sum((np.array(walls) - np.mean(walls)) ** 2))
            r_squared = 1 - residual / total if total > 0 else 1.0
            print(f"least-squares fit: wall s = {intercept:.1f} + {slope:.2f} K (R^2 {r_squared:.4f})")


if __name__ == "__main__":
    main()
