"""A build on a real two-node Ray cluster (`ray start` head + a second node, both on this
machine) through `--ray-address` writes the same bytes as an in-process build.

The cluster is started with `ray start --block` in new process groups and stopped by
signalling exactly those groups: `ray stop` would stop every Ray process on the machine,
including other people's. It runs with token authentication and its own token file, so
it neither reads nor writes ~/.ray.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mixtures import three_source_mixture
from zaya_data.cli import main

STARTED = "Ray runtime started."
START_TIMEOUT_S = 120  # two `ray start`s on a busy 2-core machine


@dataclass
class Cluster:
    address: str
    env: dict[str, str]
    logs: list[Path]
    builds: int = 0  # builds run on it so far (each is one Ray job)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_started(proc: subprocess.Popen, log: Path) -> None:
    """`ray start --block` prints STARTED once its node is registered, then blocks."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while STARTED not in log.read_text(errors="replace"):
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"ray start did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each node's process group (graceful), then SIGKILL what is left of it."""
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    d = tmp_path_factory.mktemp("cluster")
    token = d / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "RAY_USAGE_STATS_ENABLED": "0"}
    # A local build earlier in this process sets Ray's single-machine switch in os.environ
    # (executor._local_ray_on_loopback); a cluster's nodes must not inherit it, or the
    # second node refuses to join.
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    port = _free_port()
    node = ["--block", "--num-cpus", "1", "--node-ip-address", "127.0.0.1",
            "--object-store-memory", "100000000", "--disable-usage-stats"]
    commands = [
        ["ray", "start", "--head", "--port", str(port), "--include-dashboard=false",
         "--temp-dir", str(d / "ray"), *node],
        ["ray", "start", "--address", f"127.0.0.1:{port}", *node],
    ]
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []
    try:
        for i, cmd in enumerate(commands):
            log = d / f"node{i}.log"
            with log.open("w") as fh:
                procs.append(subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, start_new_session=True))
            logs.append(log)
            _wait_started(procs[-1], log)
        yield Cluster(f"127.0.0.1:{port}", env, logs)
    finally:
        _stop(procs[::-1])


def _mixture(d: Path) -> Path:
    # Three sources (three tokenize jobs) and 8-row shards (about fifty shard jobs), so
    # both one-CPU nodes get work in both stages.
    return three_source_mixture(d, name="cluster")


# Run in a separate driver so this test process never joins the cluster. The GCS keeps
# dead actors in its table, so after the build it still knows where each worker ran.
_WHERE_WORKERS_RAN = """
import json, sys
import ray
from ray._private import state
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
alive = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
jobs = {}
for a in state.actors().values():
    if a["ActorClassName"].startswith("MapWorker(") and "_RayAdapter" in a["ActorClassName"]:
        jobs.setdefault(a["JobID"], set()).add(a["Address"]["NodeID"])
print(json.dumps({"alive": alive, "jobs": {j: sorted(n) for j, n in jobs.items()}}))
"""


def _phase_files(phase_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(phase_dir.iterdir())}


@pytest.mark.parametrize("how", ["--ray-address", "RAY_ADDRESS"])
def test_a_two_node_cluster_build_equals_the_in_process_build(cluster: Cluster, tmp_path: Path, how: str) -> None:
    mix = _mixture(tmp_path)
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert main(["build", str(mix), "--out", str(local), "--quiet", "--no-ray"]) == 0
    cmd = [sys.executable, "-m", "zaya_data.cli", "build", str(mix), "--out", str(remote), "--quiet"]
    env = dict(cluster.env)
    if how == "--ray-address":
        cmd += ["--ray-address", cluster.address]
    else:  # how a process on a cluster node is usually told where its cluster is
        env["RAY_ADDRESS"] = cluster.address
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    cluster.builds += 1

    where = subprocess.run([sys.executable, "-c", _WHERE_WORKERS_RAN, cluster.address],
                           env=cluster.env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr[-3000:]
    nodes = json.loads(where.stdout.strip().splitlines()[-1])
    assert len(nodes["alive"]) == 2
    # Every build so far ran as one job of this cluster (not on a private instance), and
    # with one CPU per node and one per worker, its pool of two had to use both nodes.
    assert len(nodes["jobs"]) == cluster.builds
    assert all(n == nodes["alive"] for n in nodes["jobs"].values()), nodes

    want, got = _phase_files(local / "p"), _phase_files(remote / "p")
    shards = [n for n in want if n.startswith("shard-")]
    assert len(shards) == 50
    assert sorted(got) == sorted(want)
    for name in [*shards, "ledger.json"]:
        assert got[name] == want[name], name
    m_local, m_remote = (json.loads(x["manifest.json"]) for x in (want, got))
    # The manifest records the command line, which names --out (and --ray-address).
    assert m_remote.pop("created_by_command") == " ".join(["zaya-data", *cmd[3:]])
    m_local.pop("created_by_command")
    assert m_remote == m_local
    assert main(["verify", str(remote / "p")]) == 0
