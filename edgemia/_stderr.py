"""Keep the native libraries' start-up chatter off the console.

TensorFlow 2.21 and LiteRT write INFO lines (oneDNN notices, "Created
TensorFlow Lite XNNPACK delegate") straight to file descriptor 2 from C++,
where neither TF_CPP_MIN_LOG_LEVEL nor Python's logging reaches them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from typing import Iterator

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def native_stderr_to_log(source: str) -> Iterator[None]:
    """Redirect file descriptor 2 to a temporary file while the block runs.

    The captured text is logged at DEBUG level, or at WARNING level when the
    block raises, so that a native error message is never lost.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr (for example a closed descriptor): run as is
        yield
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace").strip()
            if text:
                logger.log(logging.WARNING if failed else logging.DEBUG, "%s wrote:\n%s", source, text)
