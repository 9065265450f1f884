"""How far can k busy processes scale on this machine? The ceiling of every CPU-scaling target.

    python benchmarks/cpu_probe.py [--counts 1,2,4,8,16] [--pairs] [--tasks alu,hash,l2,stream,faults]

A parallel-efficiency target (e.g. near dedup >= 80% at 16 cores) is only meaningful if the
machine itself reaches it on work that shares nothing. This probe runs fixed, independent
tasks in k processes at once, each pinned to a CPU of its own and started together at a
barrier, and prints the efficiency t(1) / t(k) (each process does the same work, so 100%
means k busy CPUs are as fast as one):

  alu     a pure-Python integer loop (registers and L1: the interpreter's own speed)
  hash    xxh3 of short byte strings in a Python loop (the calibration task of bench_clean)
  l2      numpy multiply/add/min over a 512 KiB buffer, repeated (L2-resident, like MinHash blocks)
  stream  numpy sum of a 256 MiB array (DRAM bandwidth shared by all cores)
  faults  16 MiB of fresh anonymous memory touched a page at a time, 16 times (the kernel's
          work per fresh page: how page faults scale over k processes)

--pairs runs `alu` on CPU 0 together with each other CPU j in turn. Two vCPUs that are
hyperthreads of one physical core slow each other down (~1.6-2x for this kind of loop);
vCPUs on separate cores do not. A virtual machine's lscpu may report "1 thread per core"
whatever the host does, so this is how to see it. Nothing here is an assertion: it prints
what the machine did, for results/ notes.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import queue
import statistics
import time
from collections.abc import Callable


def task_alu() -> None:
    acc = 0
    for i in range(3_000_000):
        acc = (acc + i * 7) & 0xFFFFFFFF


def task_hash(iterations: int = 3_000_000) -> None:
    import xxhash

    acc = 0
    for i in range(iterations):
        acc ^= xxhash.xxh3_64_intdigest(b"calibration %d" % i)


def task_l2() -> None:
    import numpy as np

    x = np.arange(65_536, dtype=np.uint64)  # 512 KiB
    h = np.empty_like(x)
    a, b = np.uint64(0x9E3779B97F4A7C15), np.uint64(12345)
    with np.errstate(over="ignore"):
        for _ in range(6_000):
            np.multiply(x, a, out=h)
            np.add(h, b, out=h)
            h.min()


def task_faults() -> None:
    import mmap

    import numpy as np

    for _ in range(16):
        m = mmap.mmap(-1, 16 << 20)
        m.madvise(mmap.MADV_NOHUGEPAGE)  # 4 KiB faults whatever the machine's THP setting
        a = np.frombuffer(m, dtype=np.uint8)
        a[::4096] = 1
        del a  # the mapping cannot close while an array views it
        m.close()


def task_stream() -> None:
    import numpy as np

    x = np.ones(32 * 1024 * 1024, dtype=np.float64)  # 256 MiB; allocating and paging it in is part of the task
    for _ in range(24):
        x.sum()


ROUND_TIMEOUT_S = 120  # a round's tasks take ~0.2-0.8 s each on an idle core

TASKS: dict[str, Callable[[], None]] = {"alu": task_alu, "hash": task_hash, "l2": task_l2, "stream": task_stream,
                                        "faults": task_faults}


def _worker(task: str, cpu: int, barrier: mp.synchronize.Barrier, out: mp.Queue[float]) -> None:
    os.sched_setaffinity(0, {cpu})
    fn = TASKS[task]
    # The tasks' modules are imported before the barrier, not inside the timed call (until
    # 2026-12-07 hash and l2 imported theirs there), and stream runs once: its 256 MiB are
    # unmapped when the array is freed (glibc returns allocations that large), so the timed
    # task pages in its own array, as task_stream says.
    import mmap  # noqa: F401

    import numpy as np
    import xxhash  # noqa: F401

    if task == "stream":
        np.ones(32 * 1024 * 1024).sum()
    barrier.wait()
    t0 = time.perf_counter()
    fn()
    out.put(time.perf_counter() - t0)


def run_round(task: str, cpus: list[int]) -> list[float]:
    """`task` once in each of len(cpus) processes, pinned, started together; their seconds."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(len(cpus))
    out: mp.Queue[float] = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(task, c, barrier, out)) for c in cpus]
    for p in procs:
        p.start()
    try:  # a process that dies before reporting (or a barrier never met) fails the probe, not hangs it
        times = [out.get(timeout=ROUND_TIMEOUT_S) for _ in procs]
    except queue.Empty:
        for p in procs:
            p.kill()
        raise RuntimeError(f"{task} on CPUs {cpus}: no result within {ROUND_TIMEOUT_S} s "
                           f"(exit codes {[p.exitcode for p in procs]})") from None
    for cpu, p in zip(cpus, procs):
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"probe process on CPU {cpu} exited with {p.exitcode}")
    return times


def scaling(tasks: list[str], counts: list[int], cpus: list[int], repeat: int) -> None:
    print("| task | processes | median task s | slowest s | efficiency (t1 / tk, median) | aggregate speedup |")
    print("|---|---|---|---|---|---|")
    for task in tasks:
        base = None
        for k in counts:
            rounds = [run_round(task, cpus[:k]) for _ in range(repeat)]
            best = min(rounds, key=max)  # the least disturbed round
            med = statistics.median(best)
            base = med if base is None else base
            print(f"| {task} | {k} | {med:.3f} | {max(best):.3f} | {base / med:.0%} | {k * base / med:.2f}x |", flush=True)


def pairs(cpus: list[int], repeat: int) -> None:
    solo = min(statistics.median(run_round("alu", [cpus[0]])) for _ in range(repeat))
    print(f"\n# alu on CPU {cpus[0]} alone: {solo:.3f} s; with a second process on CPU j:")
    print("| j | CPU 0 s | CPU j s | slowdown of CPU 0 |")
    print("|---|---|---|---|")
    for j in cpus[1:]:
        t0, tj = min((run_round("alu", [cpus[0], j]) for _ in range(repeat)), key=max)
        print(f"| {j} | {t0:.3f} | {tj:.3f} | {t0 / solo:.2f}x |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", default="1,2,4,8,16", help="process counts (those above the CPUs are skipped)")
    ap.add_argument("--tasks", default="alu,hash,l2,stream,faults", help=f"comma list of {sorted(TASKS)}")
    ap.add_argument("--pairs", action="store_true", help="also CPU 0 against each other CPU (hyperthread siblings)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds per point; the least disturbed is kept")
    args = ap.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        ap.error(f"unknown task(s) {unknown}; known: {sorted(TASKS)}")
    cpus = sorted(os.sched_getaffinity(0))
    counts = [int(k) for k in args.counts.split(",") if k]
    skipped = [k for k in counts if k > len(cpus)]
    counts = [k for k in counts if k <= len(cpus)]
    print(f"# cpu probe: {len(cpus)} CPUs usable, python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f}" + (f"; skipped counts {skipped}" if skipped else ""))
    scaling(tasks, counts, cpus, args.repeat)
    if args.pairs and len(cpus) > 1:
        pairs(cpus, args.repeat)


if __name__ == "__main__":
    main()
