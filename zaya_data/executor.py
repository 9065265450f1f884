"""Where the jobs of a stage run: a pool of Ray actors kept for the whole build (the
default), or this process.

A job is a small JSON-able dict (a file to read, a shard to write); the worker is a
class set up once per actor and stage (it holds a tokenizer) and applied per job. Results
stream back as they finish; their order is irrelevant because every job's output is named
by the job itself, which is what keeps shards independent of the worker count.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections import deque
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


# One tokenizer thread per worker: Ray provides the parallelism, and oversubscribed Rayon
# pools in every actor would only fight over the cores. Each actor sets these itself before
# anything tokenizes (Rayon reads them when its pool first starts): a job-level
# `runtime_env` would do the same but costs ~1 s in `ray.init` and ~0.6 s per actor start
# on 2 cores (measured), because every worker then waits on Ray's runtime-env agent.
_WORKER_ENV = {"RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "true"}


class _RayAdapter:
    """The body of one long-lived pool actor: it runs jobs of any stage.

    It keeps the worker of the stage it last ran, keyed by (worker class, init kwargs), and
    builds a new one only when a job of another stage arrives. One at a time, not a cache
    of every stage: a worker may hold large state (memory-mapped parts), and building one is
    cheap because the tokenizer is loaded once per process (`zaya_data.tokenizer`), which
    is the point of keeping the actors for the whole build.
    """

    def __init__(self) -> None:
        os.environ.update(_WORKER_ENV)
        self._key: str | None = None
        self._worker: Any = None

    def run(self, key: str, spec: tuple[type, dict[str, Any]], job: str) -> str:
        if key != self._key:
            self._worker = self._key = None  # drop the old stage's worker before building
            worker_cls, init_kwargs = spec
            self._worker = worker_cls(**init_kwargs)
            self._key = key
        # JSON both ways, as the contract says: results are plain data whether they were
        # made here or in process.
        return json.dumps(self._worker.run(json.loads(job)))


# Ray names an actor after its class's qualified name; this is the name the pool's actors
# carry in `ray list actors` and the GCS actor table (tests/test_ray_cluster.py reads it
# to see where a build's workers ran).
_PoolActor = type("MapWorker(_RayAdapter)", (_RayAdapter,), {})


def _stage_key(worker_cls: type, init_kwargs: dict[str, Any]) -> str:
    """Equal for equal (class, kwargs), so consecutive stages with the same worker reuse it;
    kwargs that are not JSON get a key of their own (a fresh worker, never a wrong one)."""
    try:
        text = json.dumps([worker_cls.__module__, worker_cls.__qualname__, init_kwargs], sort_keys=True)
    except (TypeError, ValueError):
        return uuid.uuid4().hex
    return hashlib.sha256(text.encode()).hexdigest()


def _spread_over_cpus(nodes: list[dict[str, Any]], n: int) -> list[str]:
    """A node id for each of `n` actors: the alive nodes in turn, each at most once per CPU
    it has (the spread a pool of one-CPU actors gets; `n` never exceeds the CPUs)."""
    free = {nd["NodeID"]: int(nd["Resources"].get("CPU", 0)) for nd in sorted(nodes, key=lambda nd: nd["NodeID"])
            if nd["Alive"] and nd["Resources"].get("CPU", 0) >= 1}
    out: list[str] = []
    while len(out) < n and free:
        for node in list(free):
            if len(out) == n:
                break
            out.append(node)
            free[node] -= 1
            if not free[node]:
                del free[node]
    return out


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
    """Runs jobs on one pool of Ray actors kept for the whole build: a local Ray instance by
    default, or a cluster address.

    Not a Ray Data pipeline per stage, which is what this was: each `map_batches` stage
    started its own actor pool (~3 s on 2 cores, measured) and every new actor re-imported
    the workers and reloaded the tokenizer, a fixed cost paid two or three times per phase.
    The pool here is started once, as soon as Ray is up, so its start-up overlaps the
    driver's own preparation, and jobs are dispatched one per idle actor with `ray.wait`.

    A killed actor is restarted by Ray and the job it held is resubmitted to it
    (`max_restarts`/`max_task_retries` unlimited); that is safe because jobs are idempotent
    and name their own outputs. Application errors (a strict-mode rejection) are not retried.
    """

    def __init__(self, address: str | None = None, workers: int | None = None, progress: bool = True):
        # RAY_ADDRESS is how Ray tells a process on a cluster node where its cluster is;
        # ray.init would read it anyway, and then refuse the local instance's num_cpus.
        address = address or os.environ.get("RAY_ADDRESS") or None
        if not address:
            _local_ray_on_loopback()
        import ray

        self.progress = progress
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
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
        # No `num_cpus` held: Ray's default for an actor is one CPU to place it and none
        # while it lives. An actor holding its CPU for the whole build would starve the Ray
        # Data tasks the driver runs between stages (build-wide dedup): with one actor per
        # CPU they never get scheduled. Our dispatch does the accounting instead -- at most
        # one job per actor, and at most as many actors on a node as it has CPUs, placed
        # explicitly because without a held resource Ray's SPREAD may put two on one node.
        # `soft`: an actor restarted after its node died goes to another one.
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actor_cls = ray.remote(max_restarts=-1, max_task_retries=-1)(_PoolActor)
        # Created now, not at the first stage: the processes start while the driver loads
        # its tokenizer and plans the jobs.
        self._actors = [
            actor_cls.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=True)).remote()
            for node in _spread_over_cpus(ray.nodes(), self.workers)
        ]
        logging.getLogger("ray").setLevel(logging.ERROR)

    def map_jobs(self, worker_cls, init_kwargs, jobs, desc):
        import ray

        if not jobs:
            return
        key = _stage_key(worker_cls, init_kwargs)
        spec = ray.put((worker_cls, init_kwargs))  # shipped once per stage, not per job
        todo = deque(json.dumps(j) for j in jobs)
        inflight: dict[Any, Any] = {}  # result ref -> the actor running it

        def submit(actor: Any) -> None:
            inflight[actor.run.remote(key, spec, todo.popleft())] = actor

        # One job per actor at a time: jobs take seconds and a dispatch round trip
        # milliseconds, and a job queued behind a busy actor could wait while another idles.
        for actor in self._actors[:len(jobs)]:
            submit(actor)
        try:
            with _progress(self.progress) as bar:
                task = bar.add_task(desc, total=len(jobs))
                while inflight:
                    (ref,), _ = ray.wait(list(inflight), num_returns=1)
                    actor = inflight.pop(ref)
                    result = json.loads(ray.get(ref))  # raises the job's own error
                    if todo:
                        submit(actor)
                    yield result
                    bar.advance(task)
        finally:
            # A stage given up on (an error, a generator closed early) must not leave jobs
            # queued on the pool ahead of the next stage's.
            for ref in inflight:
                try:
                    ray.cancel(ref)
                except Exception:  # already finished or its actor gone: nothing to stop
                    pass

    def shutdown(self) -> None:
        import ray

        if not ray.is_initialized():
            return
        # On a cluster (or a Ray this process did not start) the actors would otherwise
        # live until the driver exits.
        for actor in self._actors:
            ray.kill(actor, no_restart=True)
        self._actors = []
        if self._owns_ray:
            ray.shutdown()


def quiet_ray_data() -> None:
    """Ray Data runs only the build-wide dedup (zaya_data.clean), so it is imported there,
    not with the executor: its import costs ~0.5 s that a build without dedup need not pay.
    It logs every dataset's plan at INFO and draws its own progress bars; our bar and
    summary say the same, and Ray's would interleave with them."""
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.verbose_progress = False


def make_executor(kind: str, address: str | None, workers: int | None, progress: bool) -> Executor:
    if kind == "local":
        return LocalExecutor(progress=progress)
    return RayExecutor(address=address, workers=workers, progress=progress)
