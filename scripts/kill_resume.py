#!/usr/bin/env python3
"""Kill -9 the `zaya-data build` driver at random points, resume, compare bytes.

    python scripts/kill_resume.py [--points 10] [--seed 1] [--executor ray|local] [--mixture FILE]

1. An uninterrupted build gives the reference output and its duration T.
2. For each point (a seeded delay drawn uniformly within T, from the moment the first
   file appeared unless --from-start), a fresh build is started,
   SIGKILLed after the delay, then run again to completion. Every build runs in its own
   folder with the same relative `--out`, so even the manifest (which records the
   command line) must come out byte-identical to the reference.
3. While each build runs, a watcher lists the output over and over and checks every file
   that has a final name: phase files must equal the reference's file of that name (a
   shard, the ledger, the manifest); work parts must be complete Arrow files, part
   records complete JSON. A file caught incomplete under its final name is a violation.
4. After the kill, the driver's descendants (a local Ray instance and its workers) must
   all exit on their own within a grace period; any left are reported and killed.

Prints one row per point and exits 1 on any mismatch, violation or leftover process.
Without --mixture it writes a three-phase mixture over ../shared/data (pretraining
documents and code, SFT reasoning traces, RL prompts).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
FINAL_PHASE_FILES = ("shard-", "prompts-", "ledger.json", "manifest.json")


def default_mixture(d: Path) -> Path:
    p = d / "mix.yaml"
    p.write_text(f"""
name: killresume
seed: 3
sources:
  gsm8k: {{path: "{DATA}/qwen25-math-eval/gsm8k.jsonl", format: jsonl, category: web, fields: {{text: question}}}}
  minerva: {{path: "{DATA}/qwen25-math-eval/minerva_math.jsonl", format: jsonl, category: math, fields: {{text: solution}}}}
  olympiad: {{path: "{DATA}/qwen25-math-eval/olympiadbench.jsonl", format: jsonl, category: math,
             fields: {{text: "solution[0]"}}}}
  stdlib_email: {{path: "{{stdlib}}/email/*.py", format: text, category: code}}
  rollouts:
    path: {DATA}/qwen25-math-eval/math_cot_100_rollouts8.jsonl
    format: jsonl
    kind: reasoning
    category: long_cot
    fields: {{prompt: question, trace: "code[3]"}}
    split: final_paragraph
  math500:
    path: {DATA}/limo-eval/math.jsonl
    format: jsonl
    kind: reasoning
    category: long_cot
    fields: {{prompt: problem, reasoning: solution, answer: answer}}
  aime: {{path: "{DATA}/limo-eval/aime.jsonl", format: jsonl, kind: reasoning, category: rl_math,
         fields: {{prompt: problem, reasoning: solution, answer: answer}}}}
phases:
  pretrain:
    context: 1024
    token_budget: 400K
    weights_by: category
    weights: {{web: 2, math: 5, code: 2, long_cot: 1}}
    max_repetition: 3
    shard_rows: 8
  sft:
    context: 2048
    loss: assistant
    token_budget: 300K
    weights: {{rollouts: 1, math500: 2}}
    max_repetition: 4
    shard_rows: 8
  rl:
    kind: prompts
    prompt_budget: 400
    weights: {{math500: 3, aime: 1}}
    max_repetition: 4
""")
    return p


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def phase_files(out: Path) -> dict[str, bytes]:
    """Every file of every phase folder (not the scratch `_work`), by relative path."""
    files = {}
    for d in sorted(p for p in out.iterdir() if p.is_dir() and p.name != "_work"):
        for f in sorted(d.iterdir()):
            files[f"{d.name}/{f.name}"] = f.read_bytes()
    return files


@dataclass
class Watcher:
    """Polls a build's output folder and checks each final-named file once per version
    (a final name is only ever created by rename, so (inode, size, mtime) identifies a
    version)."""

    out: Path
    reference: dict[str, str]  # phase-relative path -> sha256 of the reference build
    violations: list[str] = field(default_factory=list)
    checked: int = 0
    first_file_at: float | None = None  # time.monotonic() when the first file was seen
    _seen: set = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _check(self, path: Path, rel: str) -> None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        key = (rel, st.st_ino, st.st_size, st.st_mtime_ns)
        if key in self._seen:
            return
        self._seen.add(key)
        self.checked += 1
        if self.first_file_at is None:
            self.first_file_at = time.monotonic()
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        name = path.name
        if rel.startswith("_work/"):
            if name.endswith(".arrow"):
                import pyarrow as pa

                try:
                    pa.ipc.open_file(pa.py_buffer(data)).read_all()
                except Exception as e:  # any failure to read is an incomplete part
                    self.violations.append(f"{rel}: incomplete Arrow part ({e})")
            elif name.endswith(".json"):
                try:
                    json.loads(data)
                except ValueError:
                    self.violations.append(f"{rel}: incomplete JSON record ({len(data)} bytes)")
        elif name == ".zaya-build":
            if len(data) != 65 or not data.endswith(b"\n"):
                self.violations.append(f"{rel}: incomplete build marker {data!r}")
        elif name.startswith(FINAL_PHASE_FILES):
            want = self.reference.get(rel)
            if want is None:
                self.violations.append(f"{rel}: not in the reference build")
            elif hashlib.sha256(data).hexdigest() != want:
                self.violations.append(f"{rel}: differs from the reference ({len(data)} bytes)")

    def scan(self) -> None:
        if not self.out.exists():
            return
        for root, _dirs, files in os.walk(self.out):
            for name in files:
                if name.startswith(".") and name != ".zaya-build":
                    continue  # a temporary name: may be incomplete by design
                path = Path(root) / name
                self._check(path, str(path.relative_to(self.out)))

    def run(self) -> None:
        while not self._stop.is_set():
            self.scan()
            time.sleep(0.02)
        self.scan()

    def __enter__(self) -> Watcher:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def descendants(pid: int) -> set[int]:
    """PIDs of every live descendant of `pid`, from /proc (no psutil needed)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def alive(pids: set[int]) -> set[int]:
    live = set()
    for p in pids:
        try:
            state = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        if state[state.rfind(")") + 2] != "Z":
            live.add(p)
    return live


@dataclass
class Build:
    cmd: list[str]
    cwd: Path
    env: dict[str, str]

    def start(self) -> subprocess.Popen:
        return subprocess.Popen(self.cmd, cwd=self.cwd, env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)

    def run(self) -> tuple[int, str]:
        p = self.start()
        _, err = p.communicate()
        return p.returncode, err.decode(errors="replace")


def stage_at(out: Path) -> str:
    """What the build had finished when it was killed: parts, shards, phase manifests."""
    if not out.exists():
        return "nothing written"
    parts = len(list(out.glob("_work/*/parts/*/unit-*.json")))
    shards = len(list(out.glob("*/shard-*.parquet")))
    done = len(list(out.glob("*/manifest.json")))
    return f"{parts} parts, {shards} shards, {done} phases"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=10, help="interrupted builds to resume (default 10)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the kill delays")
    ap.add_argument("--executor", choices=("ray", "local"), default="ray",
                    help="ray: the default local Ray instance; local: --no-ray")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mixture", type=Path, help="mixture file (default: one over ../shared/data)")
    ap.add_argument("--workdir", type=Path, help="where builds go (default: a fresh temp folder, removed)")
    ap.add_argument("--from-start", action="store_true",
                    help="draw kill delays over the whole build, start-up included (default: from the first write)")
    ap.add_argument("--grace", type=float, default=120.0,
                    help="seconds a killed driver's descendants get to exit on their own (default 120)")
    args = ap.parse_args()

    # Short paths: Ray puts unix sockets under its temp dir, and those are length-limited.
    work = args.workdir or Path(tempfile.mkdtemp(prefix="zkr-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    mixture = (args.mixture or default_mixture(work)).resolve()
    env = {**os.environ, "RAY_TMPDIR": str(work / "ray"), "RAY_USAGE_STATS_ENABLED": "0"}
    extra = ["--no-ray"] if args.executor == "local" else ["--workers", str(args.workers)]
    cmd = [sys.executable, "-m", "zaya_data.cli", "build", str(mixture), "--out", "out", "--quiet", *extra]

    ref_dir = work / "reference"
    ref_dir.mkdir()
    rc, err = Build(cmd, ref_dir, env).run()
    if rc != 0:
        print(f"reference build failed ({rc}):\n{err[-3000:]}")
        return 1
    want = phase_files(ref_dir / "out")
    reference = {k: hashlib.sha256(v).hexdigest() for k, v in want.items()}
    # A second uninterrupted build, watched like the trials (warm caches, the watcher's
    # load), gives the duration the kill delays are drawn within; it must match too.
    again = work / "again"
    again.mkdir()
    with Watcher(again / "out", reference) as watch:
        t0 = time.monotonic()
        rc, err = Build(cmd, again, env).run()
        duration = time.monotonic() - t0
    first_write = (watch.first_file_at or t0) - t0
    if rc != 0 or phase_files(again / "out") != want or watch.violations:
        print(f"two uninterrupted builds differ (rc {rc}): {watch.violations[:5]}\n{err[-3000:]}")
        return 1
    shutil.rmtree(again)
    print(f"mixture {mixture}\nexecutor {args.executor}, workers {args.workers if args.executor == 'ray' else 1}")
    print(f"uninterrupted build: {duration:.1f} s, {len(want)} files in "
          f"{len({k.split('/')[0] for k in want})} phases (built twice, identical); "
          f"first file written at {first_write:.1f} s")
    # Before the first write a kill can only lose start-up time (Ray, the tokenizer), so
    # by default the points fall between the first write and the end.
    lo = 0.0 if args.from_start else first_write
    print(f"kill delays: uniform in [{lo:.1f}, {duration:.1f}] s, seed {args.seed}")

    rng = random.Random(args.seed)
    rows = []
    failed = False
    attempts = 0
    while len(rows) < args.points and attempts < 3 * args.points:
        attempts += 1
        trial = work / f"trial-{attempts:02d}"
        trial.mkdir()
        out = trial / "out"
        delay = rng.uniform(lo, duration)
        with Watcher(out, reference) as watch:
            proc = Build(cmd, trial, env).start()
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.01)
            family = descendants(proc.pid)
            finished_first = proc.poll() is not None
            if not finished_first:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            killed_at = time.monotonic()
            if finished_first:
                print(f"  {delay:6.2f} s: the build finished before the kill; drawing another point")
                shutil.rmtree(trial, ignore_errors=True)
                continue
            state = stage_at(out)
            rc, err = Build(cmd, trial, env).run()
        got = phase_files(out) if out.exists() else {}
        same = got == want
        diff = sorted(set(got) ^ set(want)) + sorted(k for k in set(got) & set(want) if got[k] != want[k])
        rows.append([len(rows) + 1, delay, state, rc, same, watch.checked, watch.violations, family, diff, err,
                     killed_at])
        shutil.rmtree(trial, ignore_errors=True)

    # Ray's per-node agents notice a dead raylet only after a health-check timeout (about
    # a minute here), so leftovers are judged once every point's grace period is over.
    end = max((r[10] for r in rows), default=0.0) + args.grace
    while any(alive(r[7]) for r in rows) and time.monotonic() < end:
        time.sleep(0.5)
    for r in rows:
        r[7] = alive(r[7])
        for pid in r[7]:  # our own build's leftovers, by pid
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        failed |= not (r[3] == 0 and r[4] and not r[6] and not r[7])

    print()
    print(f"{'point':>5}  {'kill at':>8}  {'state at kill':<32} {'resume':>6}  {'identical':>9}  "
          f"{'files checked':>13}  {'partial visible':>15}  {'left after grace':>16}")
    for n, delay, state, rc, same, checked, viol, orph, diff, err, _ in rows:
        print(f"{n:>5}  {delay:>7.2f}s  {state:<32} {('rc ' + str(rc)):>6}  {('yes' if same else 'NO'):>9}  "
              f"{checked:>13}  {len(viol):>15}  {len(orph):>16}")
        for v in viol:
            print(f"       violation: {v}")
        for d in diff[:10]:
            print(f"       differs: {d}")
        if rc != 0:
            print(f"       resume stderr: {err[-2000:]}")
    if len(rows) < args.points:
        print(f"only {len(rows)} of {args.points} points interrupted the build")
        failed = True
    print(f"\n{len(rows)} interrupted builds resumed; "
          + ("all byte-identical, no partial file visible, no orphan process" if not failed else "FAILURES above"))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
