"""Time DP-SGD against plain training of the digits CNN on the default audit's members.

Usage: .venv/bin/python benchmarks/dp_sgd.py [--epochs N] [--repeats R]

Both train a fresh digits CNN with the digits recipe (batch 32, Adam 1e-3)
for the same number of epochs on the 898 members of seed 0: plain training
through Keras's fit (edgemia.training.train.fit_model), DP-SGD through
edgemia.training.dp with eps=8 and delta=1e-5. Each runs `repeats` times
and the fastest time is printed, with the ratio DP-SGD / plain.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from edgemia.compression.spec import parse_variant
from edgemia.data.builtin import load_dataset
from edgemia.training.defenses import DefenseData, TrainingSettings, train_defended
from edgemia.training.models import digits_cnn
from edgemia.training.train import RECIPES, Recipe, fit_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=80, help="training epochs of both (default: 80, the recipe's)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the fastest counts (default: 3)")
    args = parser.parse_args()

    data = load_dataset("digits", 0, 0.0)
    recipe = Recipe(**{**RECIPES["digits"].to_dict(), "epochs": args.epochs})
    x, y = data.members.x, data.members.y
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; {len(x)} members, {args.epochs} epochs")

    plain = []
    for repeat in range(args.repeats):
        _, seconds = fit_model(x, y, data.n_classes, recipe, seed=repeat)
        plain.append(seconds)
    print(f"plain training: {min(plain):.2f} s (runs: {', '.join(f'{s:.2f}' for s in plain)})")

    # The same epochs, batch size and learning rate as the plain run, not dp-sgd's own defaults.
    steps = parse_variant(f"dp-sgd:eps=8:epochs={recipe.epochs}:batch={recipe.batch_size}:"
                          f"lr={recipe.learning_rate:g}").training_steps
    settings = TrainingSettings(recipe.epochs, recipe.batch_size, recipe.learning_rate)
    base = digits_cnn(tuple(x.shape[1:]), data.n_classes)
    private = []
    for repeat in range(args.repeats):
        start = time.perf_counter()
        _, summary = train_defended(base, steps, DefenseData(x, y), settings, seed=repeat)
        private.append(summary["training_seconds"])
        total = time.perf_counter() - start
    print(f"DP-SGD training: {min(private):.2f} s (runs: {', '.join(f'{s:.2f}' for s in private)}); "
          f"with model set-up and accounting {total:.2f} s in the last run")
    print(f"noise multiplier {summary['noise_multiplier']:.3f}, {summary['steps']} steps, "
          f"epsilon {summary['epsilon']:.3f} at delta {summary['delta']:g}")
    print(f"ratio DP-SGD / plain: {min(private) / min(plain):.2f}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
