"""Executors that run independent tasks: a local process pool, or a Ray cluster.

Both run a picklable function on picklable items and return the results in
the items' order. A failure in any item stops the remaining ones and is
raised to the caller. Results must not depend on the executor or on the
number of workers, so each task is deterministic in its inputs.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Sequence

from edgemia.errors import EdgemiaError, InputError

logger = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")

# Worker processes are replaced after about this many tasks each. TensorFlow keeps some
# memory of every model a process trains (7 to 8 MB per breast-cancer MLP, measured), so
# long-lived workers would grow with the number of reference models. A new worker costs a
# few seconds of CPU time to start. The pool's own max_tasks_per_child hung here (Python 3.11.7).
TASKS_PER_WORKER = 32


class LocalExecutor:
    """Runs tasks in this process (workers=1) or in `workers` spawned worker processes."""

    name = "local"

    def __init__(self, workers: int = 1):
        self.workers = workers

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc_info) -> None:
        pass

    def map(self, function: Callable[[Any], Any], items: Sequence, advance: Callable[[], None] = lambda: None,
            label: Callable[[Any], str] = str) -> list:
        if self.workers <= 1 or len(items) <= 1:
            results = []
            for item in items:
                results.append(function(item))
                advance()
            return results

        logger.info("running %d tasks in %d processes", len(items), self.workers)
        results: dict[int, Any] = {}
        # Each batch of tasks gets new worker processes, about TASKS_PER_WORKER tasks each.
        batch = self.workers * TASKS_PER_WORKER
        for start in range(0, len(items), batch):
            indices = range(start, min(start + batch, len(items)))
            self._map_batch(function, items, indices, results, advance, label)
        return [results[index] for index in range(len(items))]

    def _map_batch(self, function, items: Sequence, indices: range, results: dict, advance, label) -> None:
        # TensorFlow is not fork-safe once imported, so workers start fresh ("spawn").
        # Every process trains with the same TensorFlow thread counts (edgemia._tf),
        # so the models do not depend on the number of workers.
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
        try:
            futures = {pool.submit(function, items[index]): index for index in indices}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    if future.exception() is not None:
                        logger.error("task %s failed: %s", label(items[futures[future]]), future.exception())
                        raise future.exception()
                    results[futures[future]] = future.result()
                    advance()
        except BaseException:
            # A failed task or Ctrl-C: waiting for the running tasks could take minutes, and
            # workers interrupted mid-task may never return, so they are stopped.
            _stop_pool(pool)
            raise
        pool.shutdown(wait=True)


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel the pool's queued tasks and terminate its worker processes."""
    # _processes is the pool's map of worker processes; the public API cannot stop a running task.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join()


def _is_loopback(address: str) -> bool:
    """True when a Ray address such as 127.0.0.1:6379 or localhost:6379 names this machine's loopback."""
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def _ray_token_available() -> bool:
    """Return whether Ray finds an authentication token: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return True
    return (Path.home() / ".ray" / "auth_token").is_file()


class RayExecutor:
    """Runs tasks on Ray, one CPU each: on a local cluster it starts, or on the cluster at `address`.

    The local cluster has `workers` CPUs, binds to 127.0.0.1, runs no
    dashboard and sends no usage statistics. It is shut down on exit; a
    cluster joined by address is only disconnected from.
    """

    name = "ray"

    def __init__(self, workers: int = 1, address: str | None = None):
        self.workers = workers
        self.address = address
        self._ray = None

    def __enter__(self) -> "RayExecutor":
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        if not self.address or _is_loopback(self.address):
            # Ray 2.60 replaces a node address of 127.0.0.1 with the host's outward
            # address and binds its gRPC servers there, unless clusters are switched
            # off, which ray_constants reads once, at import. With them off, every
            # server of the local cluster listens on 127.0.0.1 only, and a driver
            # joining a cluster on this machine's loopback connects there.
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        if self.address and "RAY_AUTH_MODE" not in os.environ and _ray_token_available():
            # `ray start --head` turns token authentication on when it finds a token, but a
            # driver joining by address sends its token only in token mode. Ray 2.60 accepts
            # a token sent to a cluster without authentication, so setting the mode is safe.
            os.environ["RAY_AUTH_MODE"] = "token"
        try:
            import ray
        except ImportError as exc:
            raise InputError(
                "--executor ray needs the ray package, which this installation lacks; "
                "install it with: pip install 'ray>=2.9'"
            ) from exc

        # Ray sets OMP_NUM_THREADS=1 in workers whose driver leaves it unset. Give
        # them the driver's value, or one thread per core, the libraries' default
        # in local worker processes, so thread counts match the local executor.
        env_vars = {
            "RAY_USAGE_STATS_ENABLED": "0",
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 1)),
        }
        runtime_env = {"env_vars": env_vars}
        if self.address:
            try:
                ray.init(address=self.address, runtime_env=runtime_env, logging_level=logging.WARNING)
            except ConnectionError as exc:
                raise InputError(
                    f"--ray-address {self.address}: cannot connect to a Ray cluster there ({exc}); start "
                    "one with `ray start --head`, or leave out --ray-address to start a local cluster. A "
                    "cluster with token authentication needs its token here too: in RAY_AUTH_TOKEN, in a "
                    "file named by RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token"
                ) from exc
        else:
            # "local" starts a new cluster even where RAY_ADDRESS is set or `ray start` left a
            # cluster file behind, which a bare ray.init() would join.
            ray.init(address="local", num_cpus=self.workers, include_dashboard=False, _node_ip_address="127.0.0.1",
                     runtime_env=runtime_env, logging_level=logging.WARNING)
        self._ray = ray

        node_address = ray.util.get_node_ip_address()
        if not self.address and node_address != "127.0.0.1":
            self.__exit__()
            raise EdgemiaError(
                f"the local Ray cluster runs on {node_address}, not on 127.0.0.1, because ray was imported "
                "before the executor started; start the audit in a fresh process"
            )
        return self

    def __exit__(self, *exc_info) -> None:
        if self._ray is not None:
            self._ray.shutdown()
            self._ray = None

    def map(self, function: Callable[[Any], Any], items: Sequence, advance: Callable[[], None] = lambda: None,
            label: Callable[[Any], str] = str) -> list:
        ray = self._ray
        if ray is None:
            raise RuntimeError("RayExecutor.map called outside its `with` block")
        remote = ray.remote(num_cpus=1, max_retries=0)(function)
        refs = [remote.remote(item) for item in items]
        index_of = {ref: index for index, ref in enumerate(refs)}
        logger.info("running %d tasks on Ray", len(items))
        results: dict[int, Any] = {}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    results[index_of[ref]] = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    for other in pending:
                        ray.cancel(other, force=True)
                    logger.error("task %s failed: %s", label(items[index_of[ref]]), exc)
                    raise exc.as_instanceof_cause() from None
                advance()
        return [results[index] for index in range(len(items))]


def make_executor(name: str, workers: int, address: str | None = None):
    """Return the executor called `name` with `workers` workers; `address` is a Ray cluster's."""
    if name not in EXECUTORS:
        raise InputError(f"unknown executor '{name}'; valid executors: {', '.join(EXECUTORS)}")
    if address and name != "ray":
        raise InputError(f"--ray-address {address} needs --executor ray, got --executor {name}")
    if name == "ray":
        return RayExecutor(workers, address)
    return LocalExecutor(workers)
