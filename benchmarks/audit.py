"""Time the audit end to end and per stage, for several worker-process counts.

Usage: .venv/bin/python benchmarks/audit.py [--jobs 1,2] [--references K] [-- AUDIT OPTIONS]

Each run is `edgemia audit` in a fresh process writing to a temporary
directory. The table shows the wall time of the whole command (TensorFlow's
import included) and the stage times from report.json. The machine's load
average before each run is printed too, because other work on the machine
slows the runs down.
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

from edgemia.reporting.environment import environment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="1,2", help="comma-separated worker-process counts (default: 1,2)")
    parser.add_argument("--references", type=int, default=16, help="reference models (default: 16)")
    parser.add_argument("audit_options", nargs="*", help="further `edgemia audit` options, after --")
    args = parser.parse_args()

    edgemia = Path(sys.executable).parent / "edgemia"
    machine = environment()
    print(f"{machine['host']}: {machine['cpu']}, {os.cpu_count()} cores; {args.references} reference models")
    print(f"{'jobs':>4} {'load':>5} {'wall s':>7} {'target s':>9} {'references s':>13} {'attacks s':>10}")
    for jobs in [int(part) for part in args.jobs.split(",")]:
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as out:
            command = [
                str(edgemia), "audit", "--out", out, "--jobs", str(jobs),
                "--references", str(args.references), *args.audit_options,
            ]
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - start
            stages = json.loads((Path(out) / "report.json").read_text())["stage_seconds"]
        print(
            f"{jobs:>4} {load:>5.2f} {wall:>7.1f} {stages['target_training']:>9.1f} "
            f"{stages['references']:>13.1f} {stages['attacks']:>10.1f}"
        )


if __name__ == "__main__":
    main()
