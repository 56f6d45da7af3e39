"""One place that imports TensorFlow and Keras, with their start-up logging quieted.

Only the training and conversion stages import this module, so capture and
attack code stays free of TensorFlow.
"""

from __future__ import annotations

import os

from edgemia._stderr import native_stderr_to_log


def import_tensorflow():
    """Import TensorFlow with its C++ start-up logs sent to the debug log."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_to_log("TensorFlow import"):
        import tensorflow as tf

    return tf


def import_keras():
    import_tensorflow()
    import keras

    return keras
