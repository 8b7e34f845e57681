"""`--ray [ADDRESS]`: each flight is one Ray task with the resources it declares (CPUs, GPUs).

Addresses: `local` (start a Ray on this machine for this run, stopped at the end), `auto` (the cluster this
machine is a node of), `HOST:PORT` (a head node's GCS), `ray://HOST:10001` (Ray Client, from outside the
cluster). Ray retries nothing itself (max_retries=0): the driver retries a failed flight a bounded number of
times whatever the cause, worker crash included, and reports it the same way on both runners.
"""

from __future__ import annotations

import socket
from typing import Any, Callable

from .flight import FlightTask, run_flight
from .plan import ArchiveError

CONNECT_TIMEOUT_S = 5.0


def import_ray():
    try:
        import ray
    except ImportError:
        raise ArchiveError("--ray needs Ray, which is not installed here",
                           "pip install 'firespotter[cluster]' (and the same version on every node)") from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def check_reachable(address: str) -> None:
    """A TCP connect first: Ray's own attempt to reach a dead address retries for a minute or more."""
    hp = _host_port(address)
    if address in ("local", "auto"):
        return
    if hp is None:
        raise ArchiveError(f"--ray {address!r} is not a Ray address",
                           "give local, auto, HOST:PORT or ray://HOST:10001 (and put --ray after the flights)")
    try:
        socket.create_connection(hp, timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ArchiveError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}",
                           "start it with `ray start --head` on the head node, or check the address and port") \
            from None


def _task(worker: Callable[..., dict], task: FlightTask, progress) -> dict[str, Any]:
    return worker(task, None if progress is None else progress.put_nowait)


class RayRunner:
    kind = "ray"

    def __init__(self, address: str, *, cpus: float, gpus: float, threads: int,
                 worker: Callable[..., dict] | None = None, progress: bool = True):
        ray = self.ray = import_ray()
        self.address = address
        self._connected_here = False
        if not ray.is_initialized():  # else: the caller's connection (a notebook, a test) is used as it is
            check_reachable(address)
            kwargs: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": True}
            if address == "local":
                kwargs.update(address="local", include_dashboard=False)  # a new one, even beside a running cluster
            else:
                kwargs.update(address=address)
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ArchiveError(f"cannot reach the Ray cluster at {address}: {first}",
                                   "start it with `ray start --head`, check the address, and give this machine the "
                                   "cluster's token: RAY_AUTH_TOKEN=$(ray get-auth-token) on the head") from None
            self._connected_here = True
        # Frame counts travel through a queue actor (one more worker process); without a display, no actor.
        self._queue = None
        if progress:
            from ray.util.queue import Queue

            self._queue = Queue(actor_options={"num_cpus": 0})
        self.cpus, self.gpus, self.threads = cpus, gpus, threads
        # No runtime_env: a task with one waits for workers started just for it (seconds each on a small node).
        # The backend's threads come with the task (FlightTask.threads -> [model] options.threads).
        self._remote = ray.remote(_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
        self._worker = worker or run_flight
        total = ray.cluster_resources()
        self.cluster_cpus = total.get("CPU", 0)
        self.cluster_gpus = total.get("GPU", 0)
        if gpus > self.cluster_gpus:
            self.close()
            raise ArchiveError(f"each flight asks for {gpus:g} GPU(s) but the Ray cluster has {self.cluster_gpus:g}",
                               "lower --flight-gpus or add GPU workers to the cluster")

    def describe(self) -> str:
        where = "a local Ray" if self.address == "local" else f"Ray at {self.address}"
        if not self._connected_here:
            where += ", this process's connection"
        return (f"{where} ({self.cluster_cpus:g} CPUs, {self.cluster_gpus:g} GPUs), {self.cpus:g} CPU(s)"
                f"{f' and {self.gpus:g} GPU(s)' if self.gpus else ''} per flight")

    def submit(self, task: FlightTask):
        return self._remote.remote(self._worker, task, self._queue)

    def wait(self, handles: list, timeout: float) -> list[tuple[Any, bool, Any]]:
        ready, _ = self.ray.wait(handles, num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            try:
                out.append((ref, True, self.ray.get(ref)))
            except Exception as exc:  # RayTaskError (the task raised), WorkerCrashedError, TaskCancelledError
                out.append((ref, False, exc))
        return out

    def progress(self) -> list[tuple[str, int]]:
        if self._queue is None:
            return []
        try:
            n = self._queue.qsize()
            return list(self._queue.get_nowait_batch(n)) if n else []
        except Exception:  # the progress display must never stop an archive
            return []

    def recover(self, exc: BaseException) -> None:
        pass  # Ray replaces dead workers itself

    def interrupt(self) -> None:
        pass  # cancel() below stops the tasks

    def cancel(self, handles: list) -> None:
        for ref in handles:
            try:
                self.ray.cancel(ref)
            except Exception:
                pass

    def close(self) -> None:
        if self._queue is not None:
            try:
                self._queue.shutdown()
            except Exception:
                pass
        if self._connected_here:
            self.ray.shutdown()
