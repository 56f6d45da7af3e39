"""Non-member accuracy of DP-SGD on digits for several epochs, expected batch sizes and learning rates.

Usage: .venv/bin/python benchmarks/dp_sgd_accuracy.py [--eps E] [--seeds S] [--settings E/B/LR,...]

Each setting (epochs E, expected batch size B, Adam learning rate LR)
trains a fresh digits CNN on the 898 members of data split 0 with DP-SGD at
the target epsilon (delta 1e-5, clip 1). It trains once per Keras and
sampling seed 0..S-1 and prints the noise multiplier, the steps, the accuracy on the 899
non-members per seed and their mean, and the mean training seconds. The
default list starts with the digits recipe's plain-training settings and
contains the `dp-sgd` defaults (edgemia.training.dp.DEFAULT_SETTINGS).
"""

from __future__ import annotations

import argparse
import os
import platform

import numpy as np

from edgemia._tf import import_keras
from edgemia.data.builtin import load_dataset
from edgemia.training import dp
from edgemia.training.defenses import smoothed_targets
from edgemia.training.models import digits_cnn

# (epochs, expected batch size, Adam learning rate). The first is the digits recipe's plain training,
# and the second the same with the 10 epochs that tests/test_mitigation_audit.py audits with.
SETTINGS = (
    (80, 32, 1e-3),
    (10, 32, 1e-3),
    (20, 64, 1e-2),
    (20, 128, 5e-3),
    (20, 128, 1e-2),
    (40, 128, 1e-2),
    (40, 128, 2e-2),
    (60, 256, 2e-2),
)


def _parse_settings(text: str) -> list[tuple[int, int, float]]:
    settings = []
    for item in text.split(","):
        epochs, batch, learning_rate = item.split("/")
        settings.append((int(epochs), int(batch), float(learning_rate)))
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", type=float, default=1.0, help="target epsilon (default: 1)")
    parser.add_argument("--seeds", type=int, default=3, help="runs of each setting, seeds 0.. (default: 3)")
    parser.add_argument("--settings", type=_parse_settings, default=None,
                        help="comma-separated EPOCHS/BATCH/LR triples (default: the list in this file)")
    args = parser.parse_args()

    keras = import_keras()
    data = load_dataset("digits", 0, 0.0)
    x, y = data.members.x, data.members.y
    targets = smoothed_targets(y, data.n_classes, 0.0)
    defaults = (dp.DEFAULT_SETTINGS.epochs, dp.DEFAULT_SETTINGS.batch_size, dp.DEFAULT_SETTINGS.learning_rate)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at the start; eps {args.eps:g}, {args.seeds} seeds")
    print("epochs  batch  lr      noise  steps  accuracy per seed     mean   seconds")
    for epochs, batch, learning_rate in args.settings or SETTINGS:
        plan = dp.plan_dp_sgd(len(x), batch, epochs, 1e-5, args.eps, None)
        accuracies, seconds = [], []
        for seed in range(args.seeds):
            keras.utils.set_random_seed(seed)
            model = digits_cnn(tuple(x.shape[1:]), data.n_classes)
            summary = dp.train_dp_sgd(model, x, targets, plan, 1.0, batch, learning_rate, seed=seed)
            predicted = np.argmax(model.predict(data.nonmembers.x, verbose=0), axis=1)
            accuracies.append(float(np.mean(predicted == data.nonmembers.y)))
            seconds.append(summary["training_seconds"])
        mark = "  (dp-sgd default)" if (epochs, batch, learning_rate) == defaults else ""
        per_seed = " ".join(f"{a:.3f}" for a in accuracies)
        print(f"{epochs:<7} {batch:<6} {learning_rate:<7g} {plan.noise_multiplier:<6.2f} {plan.steps:<6} "
              f"{per_seed:<21} {np.mean(accuracies):.3f}  {np.mean(seconds):.1f}{mark}", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
