"""Peak memory per worker while the corpus grows: a build must stream, so a worker's peak
resident memory should stay flat when the corpus is 10x larger.

    python benchmarks/bench_memory.py --mb 8 --factor 10 --workers 2

For each corpus size (MB and MB x factor, the real traces and solutions of ../shared/data
repeated as in bench_tokenize.py, in files of --file-mb each, shards of --shard-rows rows:
the units a worker holds keep their size while the corpus grows; a tokenize job reads
files up to pipeline.job_bytes of the corpus (1/256 of it, between 1 and 64 MB), so above
256 MB its job and the part it writes grow with the corpus up to 64 MB, and a shard's rows
are then drawn from larger parts) it runs `zaya-data build` of one packed 4K phase over all
of it on Ray with --workers actors, polls /proc every 50 ms for every descendant process
of the build, and reports the peak resident set (VmHWM, the kernel's own high-water mark,
read at each poll so a process that exits is still counted) and the largest heap seen
(RssAnon at a poll) of the driver and of the largest Ray worker. The baseline is the smaller corpus, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tokenize import build_command, write_corpus  # noqa: E402


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _descendants(pid: int) -> list[int]:
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def _status(pid: int) -> tuple[str, int, int] | None:
    """(command line, VmHWM, RssAnon in bytes) of a live process. VmHWM counts file pages
    too (memory-mapped Arrow parts the shard writers read); RssAnon is the heap alone."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        fields = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "RssAnon"):
                fields[key] = int(value.split()[0]) * 1024
        return cmd, fields.get("VmHWM", 0), fields.get("RssAnon", 0)
    except OSError:
        return None


def run_build(corpus: Path, work: Path, workers: int, tokens: int, shard_rows: int) -> dict[str, float]:
    cmd, out = build_command(corpus, work, workers, True, tokens, shard_rows=shard_rows, max_repetition=1.0,
                             allow_shortfall=True, out_name="out")
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks: dict[int, tuple[str, int, int]] = {}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            for pid in _descendants(proc.pid):
                s = _status(pid)
                if s is not None:
                    old = peaks.get(pid, ("", 0, 0))
                    peaks[pid] = (s[0], max(old[1], s[1]), max(old[2], s[2]))
            time.sleep(0.05)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    _, err = proc.communicate()
    stop.set()
    th.join()
    if proc.returncode:
        raise RuntimeError(err[-3000:])
    workers = [v for pid, v in peaks.items() if pid != proc.pid and "ray::" in v[0]]
    driver = peaks.get(proc.pid, ("", 0, 0))
    return {
        "seconds": time.perf_counter() - t0,
        "driver_peak_mb": driver[1] / 2**20,
        "driver_anon_mb": driver[2] / 2**20,
        "worker_peak_mb": max((w[1] for w in workers), default=0) / 2**20,
        "worker_anon_mb": max((w[2] for w in workers), default=0) / 2**20,
        "ray_workers_seen": len(workers),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=8)
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--file-mb", type=float, default=1.0, help="size of each JSONL file (a read unit)")
    ap.add_argument("--shard-rows", type=int, default=256, help="rows per shard (a shard writer's unit)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zaya-mem-"))
    print(f"{args.workers} Ray workers; {os.cpu_count()} CPUs; {platform.machine()}; python {platform.python_version()}")
    print(f"{'corpus MB':>9s} {'documents':>10s} {'seconds':>8s} {'driver peak MB':>15s} {'driver heap MB':>15s} "
          f"{'worker peak MB':>15s} {'worker heap MB':>15s} {'workers':>8s}", flush=True)
    rows = []
    try:
        for mb in (args.mb, args.mb * args.factor):
            shutil.rmtree(work / "corpus", ignore_errors=True)
            # The units of work keep their size as the corpus grows (more files, more shards),
            # as in a real corpus: what must stay flat is the memory of a worker.
            texts, size = write_corpus(work / "corpus", mb, max(1, round(mb / args.file_mb)))
            # 1 token per 2.5 bytes is well above what this corpus holds: the whole corpus is used.
            r = run_build(work / "corpus", work, args.workers, int(size / 2.5), args.shard_rows)
            rows.append(r)
            print(f"{size / 1e6:9.1f} {len(texts):10,d} {r['seconds']:8.1f} {r['driver_peak_mb']:15.0f} "
                  f"{r['driver_anon_mb']:15.0f} {r['worker_peak_mb']:15.0f} {r['worker_anon_mb']:15.0f} "
                  f"{r['ray_workers_seen']:8d}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    a, b = rows
    print(f"\ncorpus x{args.factor}: worker peak x{b['worker_peak_mb'] / a['worker_peak_mb']:.2f} "
          f"(heap x{b['worker_anon_mb'] / a['worker_anon_mb']:.2f}), driver peak "
          f"x{b['driver_peak_mb'] / a['driver_peak_mb']:.2f} (heap x{b['driver_anon_mb'] / a['driver_anon_mb']:.2f})")


if __name__ == "__main__":
    main()
