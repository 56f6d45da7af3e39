"""Shadow-model attack (Shokri, Stronati, Song and Shmatikov, "Membership Inference Attacks
Against Machine Learning Models", IEEE S&P 2017), with the reference models as shadow models.

Each reference model's outputs on its IN records (label 1) and its OUT
records (label 0) train one attack classifier per class of the records'
true label, as in the paper. The target's outputs on a record of class c
then go to the classifier of class c, and the score is its probability
that the record is a member.

The classifier is scikit-learn's HistGradientBoostingClassifier, where the
paper used small neural networks. Its features are phi_j = log p_j - log(1 - p_j)
for every class j: the same information as the probability vector, but
spread out where probabilities round to 0 or 1. Each class's classifier
trains on at most `shadow.max-rows` (reference model, record) pairs, drawn
at random with a fixed seed, which bounds the time on large bundles.
"""

from __future__ import annotations

import numpy as np

from edgemia.attacks.bundle import CaptureBundle
from edgemia.attacks.options import AttackOption
from edgemia.attacks.signals import logit_scaled_confidence
from edgemia.errors import InputError

NAME = "shadow"
FAMILY = "shadow"
DESCRIPTION = (
    "shadow models (Shokri et al.): one gradient-boosting attack classifier per class, trained "
    "on the reference models' outputs on their IN and OUT records"
)
DEFAULT_MAX_ROWS = 20_000
_SAMPLE_STREAM = 0x5AD0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("expected an integer") from None
    if value < 100:
        raise ValueError("expected an integer of at least 100")
    return value


OPTIONS = {
    "max-rows": AttackOption(
        DEFAULT_MAX_ROWS, _positive_int, "most (reference model, record) pairs that train one class's classifier"
    ),
}


def class_features(logits: np.ndarray) -> np.ndarray:
    """phi_j = log p_j - log(1 - p_j) for every class j of every row: [..., n, C] in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    n_classes = logits.shape[-1]
    n = logits.shape[-2]
    return np.stack(
        [logit_scaled_confidence(logits, np.full(n, j)) for j in range(n_classes)], axis=-1
    )


def score(bundle: CaptureBundle, max_rows: int = DEFAULT_MAX_ROWS) -> tuple[np.ndarray, dict]:
    """Return the shadow attack's membership probabilities for the target's records."""
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise InputError(
            f"attack '{NAME}' needs scikit-learn, which this installation lacks; install it with: "
            "pip install 'edgemia[audit]'"
        ) from None
    bundle.require_references(NAME, in_models=1, out_models=1)

    labels = bundle.target.labels
    target_features = class_features(bundle.target.logits)
    reference_features = class_features(bundle.reference_logits())  # [K, n, C]
    rng = np.random.default_rng(_SAMPLE_STREAM)
    scores = np.empty(len(labels))
    trained_rows = {}

    for label in np.unique(labels):
        records = np.flatnonzero(labels == label)
        features = reference_features[:, records].reshape(-1, target_features.shape[1])
        member = bundle.in_mask[:, records].reshape(-1)
        if features.shape[0] > max_rows:
            chosen = rng.choice(features.shape[0], size=max_rows, replace=False)
            features, member = features[chosen], member[chosen]
        if member.all() or not member.any():
            raise InputError(
                f"{bundle.location}: attack '{NAME}': the reference models have only "
                f"{'IN' if member.all() else 'OUT'} records of class {label}, so no attack classifier "
                "can be trained for it"
            )

        classifier = HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=0)
        # One OpenMP thread: the classifiers are small, and OpenMP's spinning threads
        # slowed a digits bundle's fits down 25-fold on 2 cores shared with other work.
        with threadpool_limits(limits=1, user_api="openmp"):
            classifier.fit(features, member)
            scores[records] = classifier.predict_proba(target_features[records])[:, 1]
        trained_rows[str(label)] = int(features.shape[0])

    parameters = {
        "classifier": "HistGradientBoostingClassifier(max_iter=100)",
        "max_rows": max_rows,
        "training_rows": trained_rows,
        "reference_models": bundle.n_references,
    }
    return scores, parameters
