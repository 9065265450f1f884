"""Where the jobs of a stage run: a Ray Data actor pool (the default), or this process.

A job is a small JSON-able dict (a file to read, a shard to write); the worker is a
callable class set up once per actor (it holds a tokenizer) and applied per job. Results
stream back as they finish; their order is irrelevant because every job's output is named
by the job itself, which is what keeps shards independent of the worker count.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from typing import Any, Protocol

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Executor(Protocol):
    workers: int

    def map_jobs(
        self, worker_cls: type, init_kwargs: dict[str, Any], jobs: list[dict[str, Any]], desc: str
    ) -> Iterator[dict[str, Any]]: ...

    def shutdown(self) -> None: ...


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        disable=not enabled, transient=False,
    )


class LocalExecutor:
    """Runs every job in this process, in order: for debugging and small unit tests."""

    def __init__(self, progress: bool = False):
        self.workers = 1
        self.progress = progress

    def map_jobs(self, worker_cls, init_kwargs, jobs, desc):
        worker = worker_cls(**init_kwargs)
        with _progress(self.progress) as bar:
            task = bar.add_task(desc, total=len(jobs))
            for job in jobs:
                yield worker.run(job)
                bar.advance(task)

    def shutdown(self) -> None:
        pass


class _RayAdapter:
    """Wraps a worker for `map_batches`: one JSON job in, one JSON result out."""

    def __init__(self, worker_cls: type, init_kwargs: dict[str, Any]):
        self.worker = worker_cls(**init_kwargs)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        return {"result": [json.dumps(self.worker.run(json.loads(j))) for j in batch["job"]]}


def _local_ray_on_loopback() -> None:
    """Keep a single-machine Ray instance on 127.0.0.1.

    Ray resolves "localhost" to the machine's network address on purpose (so other nodes
    can join); a local instance has no other nodes, and binding its GCS, raylet and object
    store to the network interface would expose them for nothing. Ray's switch for this is
    the one it uses on laptops; it is read at import and again when a node starts.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray._private.ray_constants as rc

    if os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0":
        rc.ENABLE_RAY_CLUSTER = False


class RayExecutor:
    """Schedules jobs on Ray Data: a local instance by default, or a cluster address."""

    def __init__(self, address: str | None = None, workers: int | None = None, progress: bool = True):
        # RAY_ADDRESS is how Ray tells a process on a cluster node where its cluster is;
        # ray.init would read it anyway, and then refuse the local instance's num_cpus.
        address = address or os.environ.get("RAY_ADDRESS") or None
        if not address:
            _local_ray_on_loopback()
        import ray
        import ray.data

        self.progress = progress
        # One tokenizer thread per worker: Ray provides the parallelism, and oversubscribed
        # Rayon pools in every actor would only fight over the cores.
        env = {"RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "true"}
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "runtime_env": {"env_vars": env},
                "configure_logging": True,
                "logging_level": "ERROR",
            }
            if address:
                kwargs["address"] = address
            else:
                kwargs["num_cpus"] = workers or os.cpu_count() or 1
            ray.init(**kwargs)
            self._owns_ray = True
        else:
            self._owns_ray = False
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, min(workers or cpus, cpus))
        # Ray Data logs every dataset's plan at INFO; our progress bar and summary say it.
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
        ctx = ray.data.DataContext.get_current()
        # Ray Data restarts a killed actor and retries its job (max_restarts and
        # max_task_retries default to unlimited); that is safe because jobs are
        # idempotent. Application errors (a strict-mode rejection) are not retried.
        ctx.enable_progress_bars = False  # ours below counts jobs; Ray's would interleave
        ctx.verbose_progress = False

    def map_jobs(self, worker_cls, init_kwargs, jobs, desc):
        import ray.data

        if not jobs:
            return
        n = min(self.workers, len(jobs))
        ds = ray.data.from_items([{"job": json.dumps(j)} for j in jobs], override_num_blocks=len(jobs))
        ds = ds.map_batches(
            _RayAdapter,
            fn_constructor_kwargs={"worker_cls": worker_cls, "init_kwargs": init_kwargs},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=n),
            num_cpus=1,
        )
        with _progress(self.progress) as bar:
            task = bar.add_task(desc, total=len(jobs))
            for row in ds.iter_rows():
                yield json.loads(row["result"])
                bar.advance(task)

    def shutdown(self) -> None:
        import ray

        if self._owns_ray and ray.is_initialized():
            ray.shutdown()


def make_executor(kind: str, address: str | None, workers: int | None, progress: bool) -> Executor:
    if kind == "local":
        return LocalExecutor(progress=progress)
    return RayExecutor(address=address, workers=workers, progress=progress)
