"""The RSA run: problems -> (population) -> R Markovian rounds -> SFT examples + RL prompts.

Work is cut into problem batches (`batch_problems` consecutive problems of the input).
For one batch the rounds run in order: round t's aggregation prompts are built from the
batch's population at round t (the input rollouts, or the teacher's own for
self-aggregation, at t = 1; round t-1's aggregated outputs after that) and the teacher
writes one aggregated solution per prompt. Each (round, batch) writes

    OUT/sft/part-rRR-bBBBBB.parquet     kept examples (prompt, target, reasoning, answer, ...)
    OUT/rl/part-rRR-bBBBBB.parquet      the aggregation prompts, without targets
    OUT/_state/rRR-bBBBBB.parquet       every generation (next round's population)
    OUT/_state/rRR-bBBBBB.json          the done record, last: counts, stats, ledger

all atomically, the done record last, so a killed run resumes at the first (round,
batch) without a done record, regenerating nothing that finished and duplicating
nothing. Since every random choice and every request seed derives from (seed, problem,
round, subset), the resumed output is byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from zaya_data.io import atomic_replace, atomic_write_text, tmp_path_for
from zaya_data.ledger import Ledger
from zaya_data.rsa.answers import answer_key, answers_equivalent, extract_boxed
from zaya_data.rsa.config import RSAConfig
from zaya_data.rsa.prompt import render_aggregation_prompt
from zaya_data.rsa.subsets import choose_subsets, is_unanimous, subset_rng
from zaya_data.rsa.tails import extract_tails, split_rollout
from zaya_data.rsa.teachers import Generation, GenerationRequest, Teacher
from zaya_data.schema import stable_id

STAGE = "rsa"

EXAMPLE = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("category", pa.string(), nullable=False),
    pa.field("problem_id", pa.string(), nullable=False),
    pa.field("round", pa.int32(), nullable=False),
    pa.field("subset_index", pa.int32(), nullable=False),
    pa.field("prompt", pa.string(), nullable=False),
    pa.field("target", pa.string(), nullable=False),
    # the target cut for a `reasoning` mixture source: <think> split, else final paragraph
    pa.field("reasoning", pa.string(), nullable=False),
    pa.field("answer", pa.string(), nullable=False),
    pa.field("reference_answer", pa.string()),
    pa.field("candidate_ids", pa.list_(pa.string()), nullable=False),
    pa.field("candidate_answers", pa.list_(pa.string()), nullable=False),
    pa.field("candidate_correct", pa.list_(pa.bool_())),  # null without a reference
    pa.field("tail_tokens", pa.list_(pa.int32()), nullable=False),
    pa.field("template", pa.string(), nullable=False),
    pa.field("teacher", pa.string(), nullable=False),
    pa.field("finish_reason", pa.string(), nullable=False),
    pa.field("target_tokens", pa.int32(), nullable=False),
    pa.field("aggregate_answer", pa.string()),
    pa.field("aggregate_correct", pa.bool_()),  # null without a reference
    pa.field("verified", pa.bool_()),  # null when the verifier is off
    pa.field("file_index", pa.int32(), nullable=False),
    pa.field("row_index", pa.int64(), nullable=False),
])
STATE = pa.schema([*EXAMPLE, pa.field("kept", pa.bool_(), nullable=False),
                   pa.field("rejection", pa.string()), pa.field("completion_tokens", pa.int32(), nullable=False)])
RL_PROMPTS = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("category", pa.string(), nullable=False),
    pa.field("file_index", pa.int32(), nullable=False),
    pa.field("row_index", pa.int64(), nullable=False),
    pa.field("prompt", pa.string(), nullable=False),
    pa.field("problem", pa.string(), nullable=False),
    pa.field("reference_answer", pa.string()),
    pa.field("problem_id", pa.string(), nullable=False),
    pa.field("round", pa.int32(), nullable=False),
    pa.field("subset_index", pa.int32(), nullable=False),
    pa.field("candidate_ids", pa.list_(pa.string()), nullable=False),
    pa.field("tail_tokens", pa.list_(pa.int32()), nullable=False),
    pa.field("template", pa.string(), nullable=False),
])
POPULATION = pa.schema([
    pa.field("problem_id", pa.string(), nullable=False),
    pa.field("candidate_id", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("answer", pa.string()),
])


class OutputMismatchError(ValueError):
    """The output folder holds a run of a different configuration."""


@dataclass(frozen=True)
class Candidate:
    id: str
    text: str
    answer: str | None


@dataclass
class Problem:
    problem_id: str
    problem: str
    reference: str | None
    candidates: list[Candidate]
    file_index: int
    row_index: int


@dataclass
class RunResult:
    out: Path
    status: str  # "complete" or "partial" (stopped early; rerun to resume)
    batches: int
    batches_done_now: int
    summary: dict[str, Any]
    ledger: Ledger


@dataclass
class Progress:
    """What a progress display needs; the runner calls `update` as work completes."""

    total_problems: int = 0
    total_rounds: int = 1
    update: Callable[[dict[str, Any]], None] = field(default=lambda ev: None)


# ----------------------------------------------------------------------------------------
# input


def _candidate_answer(text: str, given: str | None) -> str | None:
    if given is not None and given.strip():
        return given.strip()
    reasoning, final = split_rollout(text)
    return extract_boxed(final or reasoning)


def load_problems(cfg: RSAConfig, ledger: Ledger) -> list[Problem]:
    """The input's problems in source order (units sorted, rows in file order), each
    with its population (the first C usable rollouts). Empty rollouts are rejected."""
    from zaya_data.readers import list_units, read_unit

    problems: list[Problem] = []
    for unit in list_units(cfg.source):
        # With a limit, small batches keep the reader from reading (and counting rejections
        # among) many records past the last problem used.
        size = 256 if cfg.limit is None else max(1, min(256, cfg.limit))
        for batch in read_unit(cfg.source, unit, ledger, batch_size=size):
            for row in batch.to_pylist():
                if cfg.source.kind == "rollout_group":
                    pid, text = row["problem_id"], row["problem"]
                    cands = []
                    for r in row["rollouts"]:
                        if not (r.get("text") or "").strip():
                            ledger.reject(STAGE, "empty_rollout", cfg.name, file=unit.path,
                                          location=f"row {row['row_index']}", record_id=r.get("id"),
                                          detail="field 'rollouts': rollout text is empty")
                            continue
                        cands.append(Candidate(r["id"], r["text"], _candidate_answer(r["text"], r.get("answer"))))
                    if cfg.c is not None:
                        cands = cands[: cfg.c]
                    ref = row["reference_answer"]
                else:  # reasoning: a problem set; the population is generated
                    pid, text, cands = row["id"], row["prompt"], []
                    # the sample's own answer is the reference when none is mapped
                    ref = (row["reference_answer"] or extract_boxed(f"{row['reasoning']}\n{row['answer']}")
                           or row["answer"])
                problems.append(Problem(pid, text, ref, cands,
                                        int(row["file_index"]), int(row["row_index"])))
                if cfg.limit is not None and len(problems) >= cfg.limit:
                    return problems
    return problems


# ----------------------------------------------------------------------------------------
# helpers


def request_seed(seed: int, problem_id: str, round_index: int, index: int) -> int:
    """The sampling seed of one request: a pure function of where it sits in the run."""
    h = hashlib.blake2b(f"{seed}\x00{problem_id}\x00{round_index}\x00{index}".encode(), digest_size=4)
    return int.from_bytes(h.digest(), "little") & 0x7FFFFFFF


def split_target(target: str) -> tuple[str, str] | None:
    """(reasoning, answer) of a target for a `reasoning` mixture source: `<think>R</think>A`
    first; else the last paragraph is the answer; a one-paragraph target keeps all of
    itself as reasoning and its boxed answer as the answer. None when none applies."""
    reasoning, final = split_rollout(target)
    if final and reasoning.strip():
        return reasoning.strip(), final
    paras = [p for p in target.strip().split("\n\n") if p.strip()]
    if len(paras) >= 2:
        return "\n\n".join(paras[:-1]).strip(), paras[-1].strip()
    boxed = extract_boxed(target)
    if boxed and target.strip():
        return target.strip(), f"\\boxed{{{boxed}}}"
    return None


def _write_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    pq.write_table(table, tmp, compression="zstd")
    atomic_replace(tmp, path)


def _correct(reference: str | None, answer: str | None) -> bool | None:
    if reference is None:
        return None
    if answer is None:
        return False
    return answers_equivalent(reference, answer)


# ----------------------------------------------------------------------------------------
# the run


class RSARun:
    def __init__(self, cfg: RSAConfig, out: Path, teacher: Teacher, tokenizer: Any,
                 progress: Progress | None = None):
        self.cfg = cfg
        self.out = Path(out)
        self.teacher = teacher
        self.tok = tokenizer  # a HF tokenizers.Tokenizer treating special strings as text
        self.progress = progress or Progress()
        self.state = self.out / "_state"

    # -- population ---------------------------------------------------------------------

    def _population(self, b: int, problems: list[Problem], ledger: Ledger) -> dict[str, list[Candidate]]:
        cfg = self.cfg
        if cfg.population is None:
            return {p.problem_id: p.candidates for p in problems}
        part = self.state / f"population-b{b:05d}.parquet"
        done = part.with_suffix(".json")
        if not done.exists():
            pop = cfg.population
            reqs, owners = [], []
            for p in problems:
                for i in range(pop.c):
                    reqs.append(GenerationRequest(pop.prompt.replace("{problem}", p.problem),
                                                  request_seed(cfg.seed, p.problem_id, 0, i)))
                    owners.append((p, i))
            gens = self.teacher.generate(reqs, pop.sampling, on_done=self._on_generation)
            rows: dict[str, list[Any]] = {f.name: [] for f in POPULATION}
            pop_ledger = Ledger()
            for (p, i), g in zip(owners, gens):
                if g.error is not None or not g.text.strip():
                    pop_ledger.reject(STAGE, "population_error" if g.error else "population_empty", cfg.name,
                                      record_id=p.problem_id, location=f"rollout {i}", detail=g.error)
                    continue
                rows["problem_id"].append(p.problem_id)
                rows["candidate_id"].append(stable_id(f"rsa:{cfg.name}", p.problem_id, "population", str(i)))
                rows["text"].append(g.text)
                rows["answer"].append(_candidate_answer(g.text, None))
            _write_parquet(pa.table(rows, schema=POPULATION), part)
            atomic_write_text(done, json.dumps({"ledger": pop_ledger.to_dict()}, sort_keys=True))
        ledger.merge(Ledger.from_dict(json.loads(done.read_text())["ledger"]))
        table = pq.read_table(part).to_pylist()
        out: dict[str, list[Candidate]] = {p.problem_id: [] for p in problems}
        for r in table:
            out[r["problem_id"]].append(Candidate(r["candidate_id"], r["text"], r["answer"]))
        return out

    def _on_generation(self, g: Generation) -> None:
        n = g.completion_tokens if g.completion_tokens >= 0 else len(self.tok.encode(g.text).ids)
        self.progress.update({"generated_tokens": n, "generations": 1})

    # -- one round of one batch -----------------------------------------------------------

    def _round(self, r: int, b: int, problems: list[Problem],
               population: dict[str, list[Candidate]]) -> dict[str, Any]:
        cfg = self.cfg
        ledger = Ledger()
        stats = {"problems": 0, "skipped_unanimous": 0, "unanimous": 0, "no_population": 0,
                 "distinct_answers": 0, "population": 0, "population_with_ref": 0, "population_correct": 0,
                 "prompts": 0, "candidates_with_ref": 0, "candidates_correct": 0}
        requests: list[GenerationRequest] = []
        meta: list[dict[str, Any]] = []
        for p in problems:
            if p.problem_id not in population:
                continue  # left the chain in an earlier round (skipped as unanimous), already counted
            cands = population[p.problem_id]
            if not cands:
                stats["no_population"] += 1
                ledger.reject(STAGE, "no_population", cfg.name, record_id=p.problem_id, location=f"round {r}",
                              detail="no usable candidate for this round")
                continue
            answers = [c.answer for c in cands]
            stats["problems"] += 1
            stats["population"] += len(cands)
            stats["distinct_answers"] += len({answer_key(a) for a in answers})
            unanimous = is_unanimous(answers)
            stats["unanimous"] += int(unanimous)
            correct = [_correct(p.reference, a) for a in answers]
            if p.reference is not None:
                stats["population_with_ref"] += len(cands)
                stats["population_correct"] += sum(bool(c) for c in correct)
            if cfg.skip_unanimous and unanimous:
                stats["skipped_unanimous"] += 1
                ledger.reject(STAGE, "unanimous", cfg.name, record_id=p.problem_id, location=f"round {r}",
                              detail=f"all {len(cands)} candidates answer {answers[0]!r}")
                continue
            tails = extract_tails([c.text for c in cands], self.tok, cfg.tau, cfg.boundary_window)
            subsets = choose_subsets(answers, cfg.k, cfg.m, subset_rng(cfg.seed, p.problem_id, r), cfg.stratify)
            for s, idx in enumerate(subsets):
                prompt = render_aggregation_prompt(cfg.template, p.problem, [tails[i] for i in idx])
                requests.append(GenerationRequest(prompt, request_seed(cfg.seed, p.problem_id, r, s)))
                meta.append({"problem": p, "s": s, "idx": idx, "tails": [tails[i].tokens for i in idx],
                             "answers": [answers[i] for i in idx], "ids": [cands[i].id for i in idx],
                             "correct": None if p.reference is None else [bool(correct[i]) for i in idx]})
                if p.reference is not None:
                    stats["candidates_with_ref"] += len(idx)
                    stats["candidates_correct"] += sum(bool(correct[i]) for i in idx)
        stats["prompts"] = len(requests)
        gens = self.teacher.generate(requests, cfg.teacher.sampling, on_done=self._on_generation) if requests else []
        rows = self._rows(r, meta, requests, gens, ledger)
        state = pa.Table.from_pylist(rows, schema=STATE)
        tag = f"r{r:02d}-b{b:05d}"
        kept = state.filter(state["kept"])
        _write_parquet(kept.select(EXAMPLE.names).cast(EXAMPLE), self.out / "sft" / f"part-{tag}.parquet")
        rl = pa.Table.from_pylist([{
            "id": row["id"], "source": row["source"], "category": row["category"],
            "file_index": row["file_index"], "row_index": row["row_index"], "prompt": row["prompt"],
            "problem": m["problem"].problem, "reference_answer": row["reference_answer"],
            "problem_id": row["problem_id"], "round": r, "subset_index": row["subset_index"],
            "candidate_ids": row["candidate_ids"], "tail_tokens": row["tail_tokens"], "template": row["template"],
        } for row, m in zip(rows, meta)], schema=RL_PROMPTS)
        _write_parquet(rl, self.out / "rl" / f"part-{tag}.parquet")
        _write_parquet(state, self.state / f"{tag}.parquet")
        record = {"round": r, "batch": b, "stats": stats, "kept": kept.num_rows, "generated": len(rows),
                  "generated_tokens": int(sum(row["completion_tokens"] for row in rows)),
                  "ledger": ledger.to_dict()}
        atomic_write_text(self.state / f"{tag}.json", json.dumps(record, sort_keys=True))
        return record

    def _rows(self, r: int, meta: list[dict[str, Any]], requests: Sequence[GenerationRequest],
              gens: Sequence[Generation], ledger: Ledger) -> list[dict[str, Any]]:
        cfg = self.cfg
        rows = []
        for m, req, g in zip(meta, requests, gens):
            p: Problem = m["problem"]
            ex_id = stable_id(f"rsa:{cfg.name}", p.problem_id, str(r), str(m["s"]))
            target = g.text if g.error is None else ""
            split = split_target(target) if target.strip() else None
            agg = _candidate_answer(target, None) if target else None
            agg_correct = _correct(p.reference, agg)
            verified = agg_correct if cfg.verifier else None
            target_tokens = len(self.tok.encode(target).ids) if target else 0
            reason, detail = None, None
            if g.error is not None:
                reason, detail = "teacher_error", g.error
            elif not target.strip():
                reason = "empty_target"
            elif cfg.reject_truncated and g.finish_reason == "length":
                reason, detail = "truncated", f"stopped at max_tokens ({target_tokens} tokens)"
            elif split is None:
                reason, detail = "no_final_answer", "target has no </think>, no final paragraph and no \\boxed{}"
            elif cfg.verifier and p.reference is None:
                reason = "verifier_no_reference"
            elif cfg.verifier and not verified:
                reason, detail = "verifier_failed", f"answer {agg!r} vs reference {p.reference!r}"
            if reason is not None:
                ledger.reject(STAGE, reason, cfg.name, record_id=ex_id, location=f"round {r}", detail=detail)
            rows.append({
                "id": ex_id, "source": cfg.name, "category": "rsa", "problem_id": p.problem_id,
                "round": r, "subset_index": m["s"], "prompt": req.prompt, "target": target,
                "reasoning": split[0] if split else "", "answer": split[1] if split else "",
                "reference_answer": p.reference, "candidate_ids": m["ids"],
                "candidate_answers": [a if a is not None else "" for a in m["answers"]],
                "candidate_correct": m["correct"], "tail_tokens": m["tails"],
                "template": cfg.template.version, "teacher": cfg.teacher.label,
                "finish_reason": g.finish_reason, "target_tokens": target_tokens,
                "aggregate_answer": agg, "aggregate_correct": agg_correct, "verified": verified,
                "file_index": p.file_index, "row_index": p.row_index,
                "kept": reason is None, "rejection": reason,
                "completion_tokens": g.completion_tokens if g.completion_tokens >= 0 else target_tokens,
            })
        return rows

    def _next_population(self, r: int, b: int) -> dict[str, list[Candidate]]:
        """Round r's generations (all of them, kept or not: the verifier filters training
        examples, not the Markov chain) become round r+1's candidates."""
        table = pq.read_table(self.state / f"r{r:02d}-b{b:05d}.parquet",
                              columns=["id", "problem_id", "target", "aggregate_answer", "rejection"])
        out: dict[str, list[Candidate]] = {}
        for row in table.to_pylist():
            cands = out.setdefault(row["problem_id"], [])
            if row["rejection"] in ("teacher_error", "empty_target"):
                continue
            cands.append(Candidate(row["id"], row["target"], row["aggregate_answer"]))
        return out

    # -- driver ---------------------------------------------------------------------------

    def _check_output(self, overwrite: bool) -> None:
        run_file = self.state / "run.json"
        fp = self.cfg.fingerprint()
        if run_file.exists():
            old = json.loads(run_file.read_text())
            if old.get("fingerprint") != fp:
                if not overwrite:
                    raise OutputMismatchError(
                        f"{self.out} holds a run of another configuration (fingerprint {old.get('fingerprint')} "
                        f"from {old.get('config')}, this one {fp}); use --overwrite or another output folder")
        if overwrite and run_file.exists() and json.loads(run_file.read_text()).get("fingerprint") != fp:
            for sub in ("sft", "rl", "_state"):
                shutil.rmtree(self.out / sub, ignore_errors=True)
            for f in ("summary.json", "ledger.json"):
                (self.out / f).unlink(missing_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)
        if not run_file.exists():
            atomic_write_text(run_file, json.dumps({"fingerprint": fp, "config": str(self.cfg.path),
                                                    "config_text": self.cfg.raw_text}, sort_keys=True))

    def run(self, *, overwrite: bool = False, stop_after_batches: int | None = None) -> RunResult:
        cfg = self.cfg
        self._check_output(overwrite)
        read_ledger = Ledger()
        problems = load_problems(cfg, read_ledger)
        batches = [problems[i:i + cfg.batch_problems] for i in range(0, len(problems), cfg.batch_problems)]
        self.progress.total_problems = len(problems)
        self.progress.total_rounds = cfg.rounds
        done_now = 0
        status = "complete"
        for b, probs in enumerate(batches):
            if all((self.state / f"r{r:02d}-b{b:05d}.json").exists() for r in range(1, cfg.rounds + 1)):
                self.progress.update({"problems": len(probs), "resumed": True})
                continue
            if stop_after_batches is not None and done_now >= stop_after_batches:
                status = "partial"
                break
            pop_ledger = Ledger()
            population = self._population(b, probs, pop_ledger)
            for r in range(1, cfg.rounds + 1):
                if not (self.state / f"r{r:02d}-b{b:05d}.json").exists():
                    self._round(r, b, probs, population)
                population = self._next_population(r, b)
            done_now += 1
            self.progress.update({"problems": len(probs)})
        summary, ledger = self.summarize(read_ledger, len(batches), status)
        if status == "complete":
            atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=1, sort_keys=True))
            ledger.write(self.out / "ledger.json")
        return RunResult(self.out, status, len(batches), done_now, summary, ledger)

    def summarize(self, read_ledger: Ledger, n_batches: int, status: str) -> tuple[dict[str, Any], Ledger]:
        """Statistics per round, from the done records and state parts on disk, so a
        resumed run reports the whole dataset, not just what this process generated."""
        cfg = self.cfg
        ledger = Ledger().merge(read_ledger)
        for f in sorted(self.state.glob("population-b*.json")):
            ledger.merge(Ledger.from_dict(json.loads(f.read_text())["ledger"]))
        rounds: dict[int, dict[str, Any]] = {}
        for r in range(1, cfg.rounds + 1):
            acc: dict[str, Any] = {}
            lengths: list[int] = []
            agg_ref = agg_ok = 0
            for b in range(n_batches):
                rec_path = self.state / f"r{r:02d}-b{b:05d}.json"
                if not rec_path.exists():
                    continue
                rec = json.loads(rec_path.read_text())
                ledger.merge(Ledger.from_dict(rec["ledger"]))
                for k, v in rec["stats"].items():
                    acc[k] = acc.get(k, 0) + v
                for k in ("kept", "generated", "generated_tokens"):
                    acc[k] = acc.get(k, 0) + rec[k]
                t = pq.read_table(self.state / f"r{r:02d}-b{b:05d}.parquet",
                                  columns=["target_tokens", "aggregate_correct", "kept"])
                kept_mask = t["kept"].to_pylist()
                lengths.extend(n for n, k in zip(t["target_tokens"].to_pylist(), kept_mask) if k)
                for c in t["aggregate_correct"].to_pylist():
                    if c is not None:
                        agg_ref += 1
                        agg_ok += int(c)
            if not acc:
                continue
            lengths.sort()
            probs = acc.get("problems", 0)
            rounds[r] = {
                **acc,
                "agreement": acc["unanimous"] / probs if probs else None,
                "mean_distinct_answers": acc["distinct_answers"] / probs if probs else None,
                "population_accuracy": (acc["population_correct"] / acc["population_with_ref"]
                                        if acc["population_with_ref"] else None),
                "candidate_accuracy": (acc["candidates_correct"] / acc["candidates_with_ref"]
                                       if acc["candidates_with_ref"] else None),
                "aggregate_accuracy": agg_ok / agg_ref if agg_ref else None,
                "target_tokens_mean": sum(lengths) / len(lengths) if lengths else None,
                "target_tokens_median": lengths[len(lengths) // 2] if lengths else None,
                "target_tokens_max": lengths[-1] if lengths else None,
            }
        summary = {"name": cfg.name, "status": status, "fingerprint": cfg.fingerprint(),
                   "teacher": cfg.teacher.label, "template": cfg.template.version,
                   "tau": cfg.tau, "k": cfg.k, "m": cfg.m, "rounds": {str(k): v for k, v in rounds.items()},
                   "examples": sum(v["kept"] for v in rounds.values()),
                   "rl_prompts": sum(v["prompts"] for v in rounds.values()),
                   "rejections": ledger.to_dict()}
        return summary, ledger


def run_rsa(cfg: RSAConfig, out: str | Path | None = None, *, teacher: Teacher | None = None,
            progress: Progress | None = None, overwrite: bool = False,
            stop_after_batches: int | None = None) -> RunResult:
    """Run (or resume) an RSA pipeline. `teacher` overrides the configured one (tests);
    `stop_after_batches` stops after that many newly finished batches (status
    "partial"; rerunning resumes)."""
    from zaya_data.tokenizer import load_tokenizer

    out_dir = Path(out) if out is not None else Path(cfg.output or Path("out") / cfg.name)
    tok = load_tokenizer(cfg.tokenizer)
    own = teacher is None
    if teacher is None:
        from zaya_data.rsa.teachers import build_teacher

        teacher = build_teacher(cfg.teacher, tok)
    t0 = time.perf_counter()
    try:
        res = RSARun(cfg, out_dir, teacher, tok.text_tokenizer, progress).run(
            overwrite=overwrite, stop_after_batches=stop_after_batches)
    finally:
        if own:
            teacher.close()
    res.summary["seconds"] = time.perf_counter() - t0
    return res
