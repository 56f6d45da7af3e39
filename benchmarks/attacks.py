"""Time each attack, the bootstrap, DeLong's test and the whole attack stage on a synthetic bundle.

Usage: .venv/bin/python benchmarks/attacks.py [--records N] [--references K] [--resamples B]

The bundle has two-class captures whose LiRA signal is Gaussian, four
perturbed copies for label-augment and one subgroup attribute, so the timing
depends on neither TensorFlow nor a trained model. Each attack and statistic
runs three times and the fastest time is printed. The last line times the
attack stage as the audit runs it on one bundle: every attack with its
metrics, bootstrap intervals and slices (edgemia.evaluation.evaluate_bundle),
once.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from edgemia.attacks import ATTACKS, score_attack
from edgemia.attacks.bundle import CaptureBundle
from edgemia.evaluation import evaluate_bundle
from edgemia.runtime.capture import Capture
from edgemia.stats.bootstrap import metric_draws, stratified_resamples
from edgemia.stats.compare import delong_test


def _capture(phi: np.ndarray) -> Capture:
    logits = np.zeros((phi.size, 2), dtype=np.float32)
    logits[:, 1] = phi
    return Capture(
        logits=logits, labels=np.ones(phi.size, np.int64), record_id=np.arange(phi.size), raw=logits,
        meta={"backend": "native"},
    )


def _bundle(n_records: int, n_references: int) -> CaptureBundle:
    rng = np.random.default_rng(0)
    difficulty = rng.normal(0.0, 3.0, n_records)
    member = rng.permutation(np.arange(n_records) < n_records // 2)
    column = np.repeat((np.arange(n_references) < n_references // 2)[:, np.newaxis], n_records, axis=1)
    in_mask = rng.permuted(column, axis=0)
    reference_phi = difficulty + in_mask + rng.normal(size=(n_references, n_records))
    target_phi = difficulty + member + rng.normal(size=n_records)
    return CaptureBundle(
        target=_capture(target_phi),
        member=member,
        references=[_capture(row) for row in reference_phi],
        in_mask=in_mask,
        groups={"group": rng.choice(np.array(["a", "b", "c"]), n_records)},
        perturbed=[_capture(target_phi + rng.normal(0.0, 0.5, n_records)) for _ in range(4)],
    )


def _fastest(function, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1797)
    parser.add_argument("--references", type=int, default=16)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()

    bundle = _bundle(args.records, args.references)
    print(
        f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}), "
        f"{args.records} records, {args.references} reference models"
    )
    print(f"{'step':<40} {'seconds':>8}")
    scores = {}
    for name in ATTACKS:
        seconds = _fastest(lambda: scores.__setitem__(name, score_attack(name, bundle).scores))
        print(f"{'attack ' + name:<40} {seconds:8.3f}")

    resamples = stratified_resamples(bundle.member, args.resamples, seed=0)
    seconds = _fastest(lambda: metric_draws(scores["lira-online"], bundle.member, resamples))
    print(f"{f'bootstrap, {args.resamples} resamples, one attack':<40} {seconds:8.3f}")
    seconds = _fastest(lambda: delong_test(scores["lira-online"], scores["rmia"], bundle.member))
    print(f"{'DeLong test, one pair':<40} {seconds:8.3f}")
    start = time.perf_counter()
    evaluate_bundle(bundle, list(ATTACKS), resamples)
    print(f"{'attack stage: all attacks, statistics':<40} {time.perf_counter() - start:8.3f}")


if __name__ == "__main__":
    main()
