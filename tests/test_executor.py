"""The Ray executor keeps one pool of actors for a whole build: stages share the actors,
a stage's worker is built once per actor, a killed actor's job is retried, and a job's own
error reaches the caller without a retry."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from zaya_data.executor import LocalExecutor, RayExecutor


def _workers() -> tuple[type, type, type]:
    # Defined in a function so Ray ships the classes by value: the actors cannot import
    # this test module.
    class Echo:
        """Says which process and which worker instance ran each job."""

        def __init__(self, tag: str):
            self.tag = tag

        def run(self, job: dict[str, Any]) -> dict[str, Any]:
            return {"i": job["i"], "tag": self.tag, "pid": os.getpid(), "worker": id(self)}

    class DiesOnce:
        """Kills its own process in the middle of the first attempt at job 0, as the OOM
        killer or a lost node would; the marker file says the attempt happened."""

        def __init__(self, marker: str):
            self.marker = Path(marker)

        def run(self, job: dict[str, Any]) -> dict[str, Any]:
            if job["i"] == 0 and not self.marker.exists():
                self.marker.write_text(str(os.getpid()))
                os._exit(1)
            return {"i": job["i"], "pid": os.getpid()}

    class Fails:
        def __init__(self, marker: str):
            self.marker = Path(marker)

        def run(self, job: dict[str, Any]) -> dict[str, Any]:
            with self.marker.open("a") as f:
                f.write("attempt\n")
            raise ValueError(f"bad job {job['i']}")

    return Echo, DiesOnce, Fails


@pytest.fixture(scope="module")
def ray_executor():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ex = RayExecutor(workers=2, progress=False)
    yield ex
    ex.shutdown()


def test_stages_share_one_pool_and_equal_workers_are_built_once(ray_executor: RayExecutor) -> None:
    Echo, _, _ = _workers()
    jobs = [{"i": i} for i in range(12)]
    a = list(ray_executor.map_jobs(Echo, {"tag": "a"}, jobs, "a"))
    again = list(ray_executor.map_jobs(Echo, {"tag": "a"}, jobs, "a again"))
    b = list(ray_executor.map_jobs(Echo, {"tag": "b"}, jobs, "b"))
    for got in (a, again, b):
        assert sorted(r["i"] for r in got) == list(range(12))
    assert {r["tag"] for r in b} == {"b"}
    # The same processes ran every stage: the actors outlive a stage.
    pids = {r["pid"] for r in a}
    assert {r["pid"] for r in again} <= pids and {r["pid"] for r in b} <= pids
    assert len(pids) <= 2
    # One worker per actor for (Echo, tag=a), kept for its second stage; a new one for tag=b.
    per_pid = {p: {r["worker"] for r in a + again if r["pid"] == p} for p in pids}
    assert all(len(w) == 1 for w in per_pid.values()), per_pid


def test_results_match_the_in_process_executor(ray_executor: RayExecutor) -> None:
    Echo, _, _ = _workers()
    jobs = [{"i": i} for i in range(5)]
    strip = lambda rs: sorted((r["i"], r["tag"]) for r in rs)  # noqa: E731
    assert strip(ray_executor.map_jobs(Echo, {"tag": "x"}, jobs, "x")) == \
        strip(LocalExecutor().map_jobs(Echo, {"tag": "x"}, jobs, "x"))


def test_a_job_whose_actor_dies_is_retried_on_its_replacement(ray_executor: RayExecutor, tmp_path: Path) -> None:
    _, DiesOnce, _ = _workers()
    marker = tmp_path / "died"
    got = list(ray_executor.map_jobs(DiesOnce, {"marker": str(marker)}, [{"i": i} for i in range(4)], "dies"))
    assert marker.exists()
    assert sorted(r["i"] for r in got) == [0, 1, 2, 3]
    job0 = next(r for r in got if r["i"] == 0)
    assert job0["pid"] != int(marker.read_text())  # finished by a new process
    # The pool is whole again afterwards.
    Echo, _, _ = _workers()
    assert len(list(ray_executor.map_jobs(Echo, {"tag": "z"}, [{"i": i} for i in range(4)], "after"))) == 4


def test_a_jobs_own_error_is_raised_once_and_not_retried(ray_executor: RayExecutor, tmp_path: Path) -> None:
    _, _, Fails = _workers()
    marker = tmp_path / "attempts"
    with pytest.raises(ValueError, match="bad job 0"):
        list(ray_executor.map_jobs(Fails, {"marker": str(marker)}, [{"i": 0}], "fails"))
    assert marker.read_text().count("attempt") == 1
    Echo, _, _ = _workers()
    assert len(list(ray_executor.map_jobs(Echo, {"tag": "y"}, [{"i": 1}], "after error"))) == 1


def test_the_idle_pool_leaves_the_cpus_to_other_ray_work(ray_executor: RayExecutor) -> None:
    # Between stages the driver runs Ray Data (build-wide dedup) on the same CPUs; a pool
    # that held one CPU per actor for the whole build would leave it none.
    import ray

    @ray.remote(num_cpus=1)
    def one() -> int:
        return 1

    assert sum(ray.get([one.remote() for _ in range(ray_executor.workers)], timeout=120)) == ray_executor.workers


def test_actors_are_spread_over_the_nodes_one_per_cpu_at_most() -> None:
    from zaya_data.executor import _spread_over_cpus

    nodes = [{"NodeID": "b", "Alive": True, "Resources": {"CPU": 3.0}},
             {"NodeID": "a", "Alive": True, "Resources": {"CPU": 1.0}},
             {"NodeID": "gpu-head", "Alive": True, "Resources": {"GPU": 1.0}},
             {"NodeID": "dead", "Alive": False, "Resources": {"CPU": 8.0}}]
    assert _spread_over_cpus(nodes, 2) == ["a", "b"]
    assert _spread_over_cpus(nodes, 4) == ["a", "b", "b", "b"]
