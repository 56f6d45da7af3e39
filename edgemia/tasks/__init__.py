"""Units of audit work as keyed tasks: a verified result store and the executors that run them.

Each unit of work (training the target or reference model k, exporting and
capturing one variant of it) has a content key: the SHA-256 of its inputs
(data digest, recipe, seeds, variant spec, backends) and of edgemia's code.
A finished task writes a manifest, tasks/<key>.json in the run directory,
listing the files it wrote with their SHA-256. A rerun reuses a task whose
files all still match their checksums, and recomputes it otherwise, so an
audit that was killed resumes where it stopped, and an audit with more
variants trains no model again.
"""

from edgemia.tasks.executors import EXECUTORS, LocalExecutor, RayExecutor, make_executor
from edgemia.tasks.store import TaskCounts, TaskStore, array_digest, code_version, task_key

__all__ = [
    "EXECUTORS",
    "LocalExecutor",
    "RayExecutor",
    "TaskCounts",
    "TaskStore",
    "array_digest",
    "code_version",
    "make_executor",
    "task_key",
]
