"""Full-path throughput (read, tokenize, trim, pack, write shards) against its limits.

Baselines measured in the same run, on the same corpus, tokenizer and cores:
  raw        tokenizers `encode_batch` over the texts already in memory (the practical
             limit: no reading, no writing);
  datatrove  datatrove's own tokenization pipeline (JsonlReader -> DocumentTokenizer) with
             one task per core (tokenize + write only: no trimming, mixing or packing);
  zaya-data  `zaya-data build` of one packed phase over the same JSONL files on Ray with
             one worker per core (includes Ray startup) and in process (one core).

The corpus is the real reasoning traces and solutions in ../shared/data, written as
documents into JSONL files, repeated until it holds --mb megabytes.

    python benchmarks/bench_tokenize.py --mb 40 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout; ZAYA_SHARED_DATA points elsewhere (a device machine).
DATA = Path(os.environ.get("ZAYA_SHARED_DATA", ROOT.parent / "shared" / "data"))


def corpus_texts() -> list[str]:
    texts: list[str] = []
    for line in (DATA / "qwen25-math-eval" / "math_cot_100_rollouts8.jsonl").open():
        texts.extend(json.loads(line)["code"])
    for name in ("minerva_math.jsonl",):
        for line in (DATA / "qwen25-math-eval" / name).open():
            texts.append(json.loads(line)["solution"])
    for line in (DATA / "qwen25-math-eval" / "olympiadbench.jsonl").open():
        texts.append("\n".join(json.loads(line)["solution"]))
    for line in (DATA / "limo-eval" / "math.jsonl").open():
        r = json.loads(line)
        texts.append(r["problem"] + "\n\n" + r["solution"])
    return [t for t in texts if t.strip()]


def write_corpus(folder: Path, mb: int, files: int) -> tuple[list[str], int]:
    base = corpus_texts()
    texts: list[str] = []
    size = 0
    i = 0
    while size < mb * 1_000_000:
        # A copy number keeps repeated texts distinct records (ids are content hashes).
        t = f"{base[i % len(base)]}\n[copy {i // len(base)}]"
        texts.append(t)
        size += len(t.encode())
        i += 1
    folder.mkdir(parents=True, exist_ok=True)
    per = (len(texts) + files - 1) // files
    for f in range(files):
        with (folder / f"part-{f:03d}.jsonl").open("w") as out:
            for t in texts[f * per:(f + 1) * per]:
                out.write(json.dumps({"text": t}) + "\n")
    return texts, size


def bench_raw(tok_path: str, texts: list[str], workers: int) -> tuple[float, int]:
    from tokenizers import Tokenizer

    os.environ["RAYON_NUM_THREADS"] = str(workers)
    tok = Tokenizer.from_file(tok_path)
    t0 = time.perf_counter()
    n = 0
    for lo in range(0, len(texts), 1024):
        n += sum(len(e.ids) for e in tok.encode_batch(texts[lo:lo + 1024], add_special_tokens=False))
    return time.perf_counter() - t0, n


def bench_datatrove(tok_path: str, folder: Path, workers: int, work: Path) -> tuple[float, int]:
    code = f"""
import time
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.tokens import DocumentTokenizer
t0 = time.perf_counter()
LocalPipelineExecutor(
    pipeline=[JsonlReader({str(folder)!r}, text_key="text", doc_progress=False),
              DocumentTokenizer({str(work / 'dt_out')!r}, tokenizer_name_or_path={tok_path!r},
                                eos_token="<eos>", batch_size=1024, save_final_metadata=False)],
    tasks={workers}, workers={workers}, logging_dir={str(work / 'dt_logs')!r}, skip_completed=False,
).run()
print(time.perf_counter() - t0)
"""
    env = {**os.environ, "RAYON_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(r.stderr[-3000:])
    secs = float(r.stdout.strip().splitlines()[-1])
    tokens = sum((p.stat().st_size // 2) for p in (work / "dt_out").glob("*.ds"))
    return secs, tokens


def build_command(folder: Path, work: Path, workers: int, ray: bool, total_tokens: int, *,
                  shard_rows: int = 4096, max_repetition: float = 1.5, allow_shortfall: bool = False,
                  out_name: str | None = None) -> tuple[list[str], Path]:
    """A one-phase 4K mixture over every JSONL file in `folder`, and the `zaya-data build`
    command that builds it into work/<out_name>; also the output folder."""
    mix = work / "bench.yaml"
    shortfall = "\n    allow_shortfall: true" if allow_shortfall else ""
    mix.write_text(f"""
name: bench
seed: 1
sources:
  corpus: {{path: "{folder}/*.jsonl", format: jsonl, category: math}}
phases:
  p:
    context: 4096
    token_budget: {total_tokens}
    weights: {{corpus: 1}}
    max_repetition: {max_repetition}{shortfall}
    shard_rows: {shard_rows}
""")
    out = work / (out_name or ("zray" if ray else "zlocal"))
    cmd = [sys.executable, "-m", "zaya_data.cli", "build", str(mix), "--out", str(out), "--quiet",
           "--workers", str(workers)] + ([] if ray else ["--no-ray"])
    return cmd, out


def raw_processes(tok_path: str, folder: Path, mb: int, procs: int) -> tuple[float, int]:
    """bench_raw with one Rayon thread in each of `procs` separate processes, each on its
    1/procs share of the first `mb` megabytes, started together: what Ray workers do, minus
    reading, scheduling and writing. Seconds = the slowest process's tokenizing time (every
    process loads its texts before a shared start file appears)."""
    work = Path(tempfile.mkdtemp(prefix="rawprocs-"))
    go = work / "go"
    code = f"""
import json, os, sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from pathlib import Path
from bench_tokenize import bench_raw
share, procs = int(sys.argv[1]), {procs}
texts, size = [], 0
for f in sorted(Path({str(folder)!r}).glob("*.jsonl")):
    for line in f.open():
        if size >= {mb} * 1_000_000:
            break
        t = json.loads(line)["text"]
        texts.append(t)
        size += len(t.encode())
mine = texts[share::procs]
print("ready", flush=True)
while not os.path.exists({str(go)!r}):
    time.sleep(0.001)
s, n = bench_raw({tok_path!r}, mine, 1)
print(s, n, flush=True)
"""
    env = {**os.environ, "RAYON_NUM_THREADS": "1"}
    ps = [subprocess.Popen([sys.executable, "-c", code, str(i)], stdout=subprocess.PIPE, text=True, env=env)
          for i in range(procs)]
    try:
        for p in ps:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"raw process {p.args[-1]} failed before tokenizing")
        go.touch()
        results = [p.stdout.readline().split() for p in ps]
        if any(p.wait() for p in ps) or any(len(r) != 2 for r in results):
            raise RuntimeError("a raw tokenizing process failed")
    finally:
        for p in ps:
            p.kill()
        shutil.rmtree(work, ignore_errors=True)
    return max(float(r[0]) for r in results), sum(int(r[1]) for r in results)


def bench_zaya(folder: Path, workers: int, work: Path, ray: bool, total_tokens: int, shard_rows: int = 4096,
               address: str | None = None, env: dict[str, str] | None = None) -> tuple[float, int]:
    cmd, out = build_command(folder, work, workers, ray, total_tokens, shard_rows=shard_rows)
    if address:
        cmd += ["--ray-address", address]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    secs = time.perf_counter() - t0
    if r.returncode:
        raise RuntimeError(r.stdout[-2000:] + r.stderr[-3000:])
    m = json.loads((out / "p" / "manifest.json").read_text())
    # Tokens processed = every token the tokenizer produced (all of the source is read and
    # tokenized; the budget asks for all of it).
    return secs, m["sources"]["corpus"]["available_tokens"]


def raw_subprocess(tok_path: str, folder: Path, mb: int, threads: int) -> tuple[float, int]:
    """bench_raw in a fresh process (Rayon sizes its pool once per process) over the first
    `mb` megabytes of the corpus files."""
    code = f"""
import json, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from pathlib import Path
from bench_tokenize import bench_raw
texts, size = [], 0
for f in sorted(Path({str(folder)!r}).glob("*.jsonl")):
    for line in f.open():
        if size >= {mb} * 1_000_000:
            break
        t = json.loads(line)["text"]
        texts.append(t)
        size += len(t.encode())
s, n = bench_raw({tok_path!r}, texts, {threads})
print(s, n)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(r.stderr[-3000:])
    s, n = r.stdout.split()
    return float(s), int(n)


# glibc settings that keep freed memory in each process instead of returning it to the
# kernel (no fresh, zeroed pages for every large allocation): the `--malloc-keep` variant.
# PYTHONMALLOC=malloc routes Python's own small objects (token id lists) through glibc too;
# pymalloc would otherwise map and unmap its arenas whatever glibc is told.
MALLOC_KEEP = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
               "MALLOC_TOP_PAD_": str(64 << 20), "PYTHONMALLOC": "malloc"}


def stop_ray() -> None:
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True)


def start_ray_head(work: Path, cpus: int, extra_env: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """A local Ray head with `cpus` CPUs, as a cluster's would be (stopped at the end); its
    address, and the environment its clients need (Ray's token authentication, on by
    default for `ray start`). `extra_env` reaches the workers (they inherit the raylet's)."""
    import secrets

    port = 6390
    token = work / "ray_auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0",
           **(extra_env or {})}
    r = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}",
                        "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--include-dashboard=false",
                        "--disable-usage-stats", f"--temp-dir={work / 'ray'}"], capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(r.stdout[-2000:] + r.stderr[-2000:])
    return f"127.0.0.1:{port}", env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=40)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--files", type=int, default=0, help="JSONL files (default: 4 per worker)")
    ap.add_argument("--scaling", default="", help="also build with Ray at these worker counts, e.g. 1,2,4,8,16")
    ap.add_argument("--shard-rows", type=int, default=4096, help="rows per shard (the shard stage's job size)")
    ap.add_argument("--only-scaling", action="store_true",
                    help="skip the datatrove, in-process and full-width Ray rows (raw stays: it is the reference)")
    ap.add_argument("--raw-scaling", default="", metavar="K,K,...",
                    help="raw encode_batch with K Rayon threads (a fresh process each) on the first --raw-mb "
                         "of the corpus: how the tokenizer itself scales on this machine")
    ap.add_argument("--raw-procs", default="", metavar="K,K,...",
                    help="raw encode_batch in K single-threaded processes at once, each on 1/K of the first "
                         "--raw-mb: the machine's scaling for the shape of work Ray workers do")
    ap.add_argument("--raw-mb", type=int, default=40)
    ap.add_argument("--base-rate", type=float, default=0.0,
                    help="tokens/s of one worker measured earlier on the same corpus and machine: efficiencies "
                         "are against it instead of the first count (for a run of the large counts only)")
    ap.add_argument("--malloc-keep", action="store_true",
                    help="with --cluster: after the scaling rows, restart the head with glibc's MALLOC_* set to keep "
                         "freed memory (MALLOC_KEEP) and build again at the largest count")
    ap.add_argument("--cluster", action="store_true",
                    help="scaling builds join one Ray instance started once for them (`ray start --head`), "
                         "as on a cluster, instead of each starting and stopping its own")
    args = ap.parse_args()
    from zaya_data.tokenizer import load_tokenizer

    import zaya_data

    load_tokenizer("embedded")  # fails clearly if the packaged tokenizer is missing
    tok_path = str(Path(zaya_data.__file__).parent / "assets" / "tokenizer" / "tokenizer.json")
    work = Path(tempfile.mkdtemp(prefix="zaya-bench-"))
    # Each figure is printed as soon as it is measured, so a run cut short by a time limit
    # still reports what it finished.
    try:
        texts, size = write_corpus(work / "corpus", args.mb, args.files or 4 * args.workers)
        print(f"corpus: {len(texts):,} documents, {size / 1e6:.1f} MB; {args.workers} cores; "
              f"{platform.processor() or platform.machine()}; python {platform.python_version()}", flush=True)
        print(f"{'path':48s} {'seconds':>8s} {'tokens':>12s} {'tokens/s':>12s} {'x raw':>7s}", flush=True)
        raw_s, raw_tok = bench_raw(tok_path, texts, args.workers)
        raw_rate = raw_tok / raw_s

        def row(name: str, s: float, n: int) -> None:
            print(f"{name:48s} {s:8.2f} {n:12,d} {n / s:12,.0f} {n / s / raw_rate:7.2f}", flush=True)

        row("raw encode_batch (in memory)", raw_s, raw_tok)
        if not args.only_scaling:
            row(f"datatrove tokenize pipeline, {args.workers} tasks",
                *bench_datatrove(tok_path, work / "corpus", args.workers, work))
            row("zaya-data build, in process (1 core)", *bench_zaya(work / "corpus", 1, work, ray=False,
                                                                      total_tokens=raw_tok, shard_rows=args.shard_rows))
            row(f"zaya-data build, Ray, {args.workers} workers",
                *bench_zaya(work / "corpus", args.workers, work, ray=True, total_tokens=raw_tok,
                            shard_rows=args.shard_rows))
        raw_counts = [int(x) for x in args.raw_scaling.split(",") if x]
        if raw_counts:
            print(f"\nraw encode_batch on the first {args.raw_mb} MB, one process per thread count", flush=True)
            print(f"{'threads':>11s} {'seconds':>8s} {'tokens/s':>12s} {'speedup':>8s} {'efficiency':>10s}", flush=True)
        raw_base = 0.0
        for k in raw_counts:
            s, n = raw_subprocess(tok_path, work / "corpus", args.raw_mb, k)
            raw_base = raw_base or n / s / k
            print(f"{k:11d} {s:8.2f} {n / s:12,.0f} {n / s / (raw_base * raw_counts[0]):8.2f} "
                  f"{n / s / (raw_base * k):10.2%}", flush=True)
        proc_counts = [int(x) for x in args.raw_procs.split(",") if x]
        if proc_counts:
            print(f"\nraw encode_batch on the first {args.raw_mb} MB, K single-threaded processes at once", flush=True)
            print(f"{'processes':>11s} {'seconds':>8s} {'tokens/s':>12s} {'speedup':>8s} {'efficiency':>10s}", flush=True)
        proc_base = 0.0
        for k in proc_counts:
            s, n = raw_processes(tok_path, work / "corpus", args.raw_mb, k)
            proc_base = proc_base or n / s / k
            print(f"{k:11d} {s:8.2f} {n / s:12,.0f} {n / s / (proc_base * proc_counts[0]):8.2f} "
                  f"{n / s / (proc_base * k):10.2%}", flush=True)
        counts = [int(x) for x in args.scaling.split(",") if x]
        address, env = start_ray_head(work, max(counts)) if counts and args.cluster else (None, None)
        if counts:
            how = f"joining one Ray instance ({address})" if address else "each build starting its own Ray"
            print(f"\nscaling: {how}; shard_rows {args.shard_rows}", flush=True)
            print(f"{'Ray workers':>11s} {'seconds':>8s} {'tokens/s':>12s} {'speedup':>8s} {'efficiency':>10s}",
                  flush=True)
        base = args.base_rate
        if base and counts:
            print(f"(efficiency against one worker at {base:,.0f} tokens/s, measured earlier)", flush=True)

        def scaling_row(w: int, note: str = "") -> None:
            nonlocal base
            shutil.rmtree(work / "zray", ignore_errors=True)
            s, n = bench_zaya(work / "corpus", w, work, ray=True, total_tokens=raw_tok, shard_rows=args.shard_rows,
                              address=address, env=env)
            rate = n / s
            base = base or rate / w  # per-worker rate of the first (smallest) count
            steps = json.loads((work / "zray" / "_work" / "timings-p.json").read_text())
            where = "  [" + ", ".join(f"{k} {v:.1f}s" for k, v in steps.items()) + "]"
            print(f"{w:11d} {s:8.2f} {rate:12,.0f} {rate / base:8.2f} {rate / (base * w):10.2%}{note}{where}",
                  flush=True)

        for w in counts:
            scaling_row(w)
        if counts and args.cluster and args.malloc_keep:
            stop_ray()
            address, env = start_ray_head(work, max(counts), MALLOC_KEEP)
            scaling_row(max(counts), f"  (workers with {' '.join(f'{k}={v}' for k, v in MALLOC_KEEP.items())})")
    finally:
        if args.cluster:  # the head this run started (a benchmark machine runs no other Ray)
            stop_ray()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
