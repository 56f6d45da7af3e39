"""One place that imports TensorFlow and Keras, with their start-up logging quieted.

Only the training and conversion stages import this module, so capture and
attack code stays free of TensorFlow.
"""

from __future__ import annotations

import logging
import os

from edgemia._stderr import native_stderr_to_log

logger = logging.getLogger(__name__)

# TensorFlow runs each op on one thread and one op at a time, in every process.
# Even with op determinism, trained weights depend on the number of intra-op
# threads, and TensorFlow's default is the number of cores. A fixed count makes
# the models the same whatever the number of workers or the machine's cores,
# and lets parallel workers use the cores instead of competing for them.
TRAINING_THREADS = 1


def import_tensorflow():
    """Import TensorFlow with its C++ start-up logs sent to the debug log and its thread counts fixed."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_to_log("TensorFlow import"):
        import tensorflow as tf

    threading = tf.config.threading
    if (threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads()) != (
        TRAINING_THREADS, TRAINING_THREADS
    ):
        try:
            threading.set_intra_op_parallelism_threads(TRAINING_THREADS)
            threading.set_inter_op_parallelism_threads(TRAINING_THREADS)
        except RuntimeError:
            # TensorFlow ran an op before edgemia imported it, so its thread pools exist.
            logger.warning(
                "TensorFlow was started before edgemia could set its thread counts to %d; "
                "trained weights may differ from a fresh process's", TRAINING_THREADS,
            )
    return tf


def import_keras():
    import_tensorflow()
    import keras

    return keras
