"""The near-dedup resolution after the map (links -> semi-join -> pair check -> union-find),
the part of a build's dedup that runs in one process, against its former form in the
same run.

    python benchmarks/bench_dedup_driver.py [--scale 32] [--workers 2] [--repeat 3]

The corpus, map and reduce are bench_clean.py's scaling mode (signatures and bucket rows
written per chunk, links per hash partition, in a process pool of `--workers`). Then
`resolve_candidates` runs `--repeat` times per form, alternating:
  current   the driver's distinct records and pairs by one sort, pairs compared on threads
  baseline  the same code with numpy's `np.unique` for both and the pairs on one thread
            (what the resolution did before 2026-12-03)
The semi-join runs in the pool in both. Prints the best and median seconds of each and
their ratio, and checks that both give the same drop list.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_clean as bc  # noqa: E402
from zaya_data.clean import dedup  # noqa: E402


@contextmanager
def baseline() -> Iterator[None]:
    """The resolution with np.unique and a one-thread pair check."""
    saved = dedup._sorted_unique, dedup._unique_inverse, dedup.similar

    def unique_inverse(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u, inv = np.unique(x, return_inverse=True)
        return u, inv.ravel()

    dedup._sorted_unique = np.unique
    dedup._unique_inverse = unique_inverse
    dedup.similar = lambda mh, m, a, t, threads=None: saved[2](mh, m, a, t, threads=1)
    try:
        yield
    finally:
        dedup._sorted_unique, dedup._unique_inverse, dedup.similar = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=32, help="corpus copies, as bench_clean --scale (default 32)")
    ap.add_argument("--workers", type=int, default=2, help="pool processes for the map and the semi-join")
    ap.add_argument("--repeat", type=int, default=3, help="runs per form, alternating (default 3)")
    args = ap.parse_args()
    bc._SCALE_TEXTS = bc.corpus_docs(args.scale)
    work = Path(tempfile.mkdtemp(prefix="bench_dedup_driver_"))
    try:
        with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("fork")) as pool:
            list(pool.map(bc._scale_map, [(c, str(work)) for c in range(bc.SCALE_CHUNKS)]))
            blobs = list(pool.map(bc._scale_reduce, [(p, str(work), 0) for p in range(bc.SCALE_PARTITIONS)]))
            bc._scale_resolve(pool, blobs, work)  # warm: imports, page cache
            times: dict[str, list[float]] = {"current": [], "baseline": []}
            drops = {}
            for i in range(args.repeat):
                for form in (("current", "baseline") if i % 2 == 0 else ("baseline", "current")):
                    t0 = time.perf_counter()
                    if form == "baseline":
                        with baseline():
                            drops[form], stats = bc._scale_resolve(pool, blobs, work)
                    else:
                        drops[form], stats = bc._scale_resolve(pool, blobs, work)
                    times[form].append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"# dedup driver resolution: {len(bc._SCALE_TEXTS)} docs (scale {args.scale}), {args.workers} pool "
          f"processes, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, numpy {np.__version__}")
    print("# " + ", ".join(f"{k} {v:g}" for k, v in stats.items() if k != "verify_s"))
    print("| form | best s | median s |")
    print("|---|---|---|")
    for form, ts in times.items():
        print(f"| {form} | {min(ts):.3f} | {statistics.median(ts):.3f} |")
    same = drops["current"].equals(drops["baseline"])
    print(f"baseline / current (best): {min(times['baseline']) / min(times['current']):.2f}x; "
          f"drop lists {'identical' if same else 'DIFFER'} ({drops['current'].num_rows} drops)")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
