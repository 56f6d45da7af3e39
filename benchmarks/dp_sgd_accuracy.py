"""Non-member accuracy of DP-SGD on digits for several expected batch sizes and learning rates.

Usage: .venv/bin/python benchmarks/dp_sgd_accuracy.py [--eps E] [--epochs N]

Each setting trains a fresh digits CNN (Keras seed 0) on the 898 members of
seed 0 with DP-SGD at the target epsilon (delta 1e-5, clip 1) and prints the
noise multiplier, the steps, the accuracy on the 899 non-members and the
training seconds.
"""

from __future__ import annotations

import argparse

import numpy as np

from edgemia._tf import import_keras
from edgemia.data.builtin import load_dataset
from edgemia.training import dp
from edgemia.training.defenses import smoothed_targets
from edgemia.training.models import digits_cnn

# (expected batch size, Adam learning rate); the first is the digits recipe's.
SETTINGS = ((32, 1e-3), (32, 1e-2), (64, 1e-2), (128, 1e-2), (128, 2e-2), (256, 3e-2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", type=float, default=1.0, help="target epsilon (default: 1)")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs (default: 20)")
    args = parser.parse_args()

    keras = import_keras()
    data = load_dataset("digits", 0, 0.0)
    x, y = data.members.x, data.members.y
    print("batch  lr      noise  steps  accuracy  seconds")
    for batch, learning_rate in SETTINGS:
        plan = dp.plan_dp_sgd(len(x), batch, args.epochs, 1e-5, args.eps, None)
        keras.utils.set_random_seed(0)
        model = digits_cnn(tuple(x.shape[1:]), data.n_classes)
        summary = dp.train_dp_sgd(model, x, smoothed_targets(y, data.n_classes, 0.0), plan, 1.0, batch,
                                  learning_rate, seed=0)
        predicted = np.argmax(model.predict(data.nonmembers.x, verbose=0), axis=1)
        accuracy = float(np.mean(predicted == data.nonmembers.y))
        print(f"{batch:<6} {learning_rate:<7g} {plan.noise_multiplier:<6.2f} {plan.steps:<6} {accuracy:<9.3f} "
              f"{summary['training_seconds']:.1f}")


if __name__ == "__main__":
    main()
