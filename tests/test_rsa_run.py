"""End-to-end RSA runs: an OpenAI-compatible stub server on loopback (with injected
429/5xx failures and timeouts), Markovian rounds, resumption, key hygiene, the CLI's
exit codes and the tiny ZAYA1 model as teacher on CPU."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from zaya_data.ledger import Ledger
from zaya_data.config import ConfigError
from zaya_data.rsa.config import load_rsa_config
from zaya_data.rsa.run import run_rsa
from zaya_data.rsa.teachers import GenerationRequest, OpenAISettings, OpenAITeacher, Sampling, TeacherUnavailable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stub_openai_server import StubOpenAIServer  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "qwen25-math-eval" / "math_cot_100_rollouts8.jsonl"
KEY = "sk-test-SECRET-7f3a9c1e"


def write_config(tmp_path: Path, base_url: str, *, extra: str = "", limit: int = 12, rounds: int = 2,
                 name: str = "rsa.yaml", teacher: str | None = None) -> Path:
    teacher = teacher or (f"{{kind: openai, base_url: '{base_url}', model: stub, concurrency: 4, "
                          f"backoff: 0.01, timeout: 5, api_key_env: RSA_TEST_KEY}}")
    p = tmp_path / name
    p.write_text(f"""name: rsa_test
seed: 7
input:
  path: {DATA}
  format: jsonl
  fields: {{problem: question, rollouts: code, rollout_answers: pred, reference_answer: gt}}
  limit: {limit}
tails: {{tau: 128, boundary_window: 16}}
subsets: {{k: 4, m: 2, stratify: true}}
teacher: {teacher}
rounds: {rounds}
batch_problems: 5
{extra}""")
    return p


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def key_env(monkeypatch):
    monkeypatch.setenv("RSA_TEST_KEY", KEY)


def test_two_round_run_through_stub_with_retries(tmp_path):
    with StubOpenAIServer(fail_first=[429, 500, 503], expected_key=KEY) as stub:
        cfg = load_rsa_config(write_config(tmp_path, stub.base_url))
        res = run_rsa(cfg, tmp_path / "out")
        # replies are recorded as they finish (4 in flight), so compare as multisets
        assert sorted(x for x in stub.statuses if x != 200) == [429, 500, 503]
        assert stub.statuses.count(200) == 48
        assert len(stub.requests) == 3 + 2 * 12 * 2  # 12 problems x M=2 prompts x 2 rounds, + 3 retried
        assert len({r["seed"] for r in stub.requests[3:]}) == 48  # one seed per request
    assert res.status == "complete" and res.batches == 3
    sft = pq.read_table(tmp_path / "out" / "sft").to_pylist()
    assert len(sft) == 48 and len({r["id"] for r in sft}) == 48
    assert sorted({r["round"] for r in sft}) == [1, 2]
    r1 = {r["id"]: r for r in sft if r["round"] == 1}
    for r in sft:
        assert r["category"] == "rsa" and r["teacher"] == "openai:stub" and r["template"] == "rsa-agg-v1"
        assert all(n <= 128 for n in r["tail_tokens"]) and r["verified"] is None
        if r["round"] == 2:
            # Markovian: round 2's candidates are round 1's outputs for the same problem
            assert all(r1[c]["problem_id"] == r["problem_id"] for c in r["candidate_ids"])
            assert len(r["candidate_ids"]) == 2  # population of M=2 < K=4: everyone
        else:
            assert len(r["candidate_ids"]) == 4
    rl = pq.read_table(tmp_path / "out" / "rl")
    assert rl.num_rows == 48 and "target" not in rl.column_names
    s = res.summary["rounds"]
    assert (s["1"]["problems"], s["1"]["unanimous"], s["1"]["prompts"], s["1"]["kept"]) == (12, 11, 24, 24)
    assert (s["1"]["candidates_correct"], s["1"]["candidates_with_ref"]) == (82, 96)
    assert s["1"]["aggregate_accuracy"] == 21 / 24
    assert s["2"]["aggregate_accuracy"] == 22 / 24
    assert res.summary["rejections"]["total"] == 0
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk == {k: v for k, v in res.summary.items() if k != "seconds"}


def test_sft_output_reads_as_a_reasoning_mixture_source(tmp_path):
    from zaya_data.readers import read_source
    from zaya_data.specs import SourceSpec

    with StubOpenAIServer() as stub:
        run_rsa(load_rsa_config(write_config(tmp_path, stub.base_url, limit=5, rounds=1)), tmp_path / "out")
    spec = SourceSpec(name="rsa", paths=(str(tmp_path / "out" / "sft" / "*.parquet"),), format="parquet",
                      kind="reasoning", category="rsa",
                      fields={"prompt": "prompt", "reasoning": "reasoning", "answer": "answer",
                              "reference_answer": "reference_answer"})
    ledger = Ledger()
    rows = [r for t in read_source(spec, ledger) for r in t.to_pylist()]
    assert len(rows) == 10 and ledger.total() == 0
    assert all(r["prompt"].startswith("Problem:\n") and "\\boxed{" in r["answer"] for r in rows)


def test_killed_run_resumes_to_identical_output_without_duplicates(tmp_path):
    with StubOpenAIServer() as stub:
        cfg = load_rsa_config(write_config(tmp_path, stub.base_url))
        run_rsa(cfg, tmp_path / "full")
        full_requests = len(stub.requests)
        partial = run_rsa(cfg, tmp_path / "resumed", stop_after_batches=1)
        assert partial.status == "partial" and partial.batches_done_now == 1
        assert not (tmp_path / "resumed" / "summary.json").exists()
        first = len(stub.requests) - full_requests
        # A crash inside batch 2, round 2: its parts were written, its done record not.
        run_rsa(cfg, tmp_path / "resumed", stop_after_batches=1)
        (tmp_path / "resumed" / "_state" / "r02-b00001.json").unlink()
        before = len(stub.requests)
        res = run_rsa(cfg, tmp_path / "resumed")
        assert res.status == "complete" and res.batches_done_now == 2
        # only batch 2's round 2 (4 problems... 5 x M=2) and batch 3 (2 problems x 2 x 2 rounds) regenerated
        assert len(stub.requests) - before == 5 * 2 + 2 * 2 * 2
        assert first == 5 * 2 * 2
    assert tree(tmp_path / "full") == tree(tmp_path / "resumed")
    ids = pq.read_table(tmp_path / "resumed" / "sft", columns=["id"])["id"].to_pylist()
    assert len(ids) == len(set(ids)) == 48


def test_api_key_never_reaches_outputs_logs_or_terminal(tmp_path, capsys, caplog):
    from zaya_data.cli_rsa import register

    caplog.set_level(logging.DEBUG)
    # The careless server quotes the Authorization header in a 400's body; the 400 is not
    # retried and lands in the ledger as a teacher_error with the message scrubbed.
    with StubOpenAIServer(fail_first=[400, 429], expected_key=KEY, echo_auth=True) as stub:
        cfg_path = write_config(tmp_path, stub.base_url, limit=5, rounds=1)
        parser = argparse.ArgumentParser()
        register(parser.add_subparsers())
        args = parser.parse_args(["rsa", str(cfg_path), "--out", str(tmp_path / "out")])
        assert args.func(args) == 0
        assert stub.auth_headers[-1] == f"Bearer {KEY}"
    captured = capsys.readouterr()
    ledger = json.loads((tmp_path / "out" / "ledger.json").read_text())
    [row] = ledger["rejections"]
    assert (row["reason"], row["count"]) == ("teacher_error", 1)
    assert "Bearer ***" in row["examples"][0]["detail"]
    for name, data in tree(tmp_path / "out").items():
        assert KEY.encode() not in data, name
    assert KEY not in captured.out + captured.err + caplog.text
    assert "RSA_TEST_KEY" in (tmp_path / "out" / "_state" / "run.json").read_text()  # the name only


def test_teacher_retries_timeouts_then_gives_up_cleanly():
    with StubOpenAIServer(hang_first=1, hang_seconds=1.0) as stub:
        t = OpenAITeacher(OpenAISettings(base_url=stub.base_url, model="m", timeout=0.3, backoff=0.01, retries=2))
        [g] = t.generate([GenerationRequest("Candidate 1: \\boxed{3}", 1)], Sampling(max_tokens=50))
        assert g.text.endswith("$\\boxed{3}$.") and g.finish_reason == "stop" and t.retried == 1
    with StubOpenAIServer(fail_first=[503] * 10) as stub:
        t = OpenAITeacher(OpenAISettings(base_url=stub.base_url, model="m", backoff=0.01, retries=2,
                                         endpoint="completions"))
        with pytest.raises(TeacherUnavailable, match="gave up after 3 attempts: HTTP 503"):
            t.generate([GenerationRequest("p", 1)], Sampling())
        assert len(stub.requests) == 3


def test_cli_exit_codes(tmp_path):
    from zaya_data.cli_rsa import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())

    def run(*argv: str) -> int:
        args = parser.parse_args(["rsa", *argv])
        return args.func(args)

    bad = tmp_path / "bad.yaml"
    bad.write_text("input: {path: x}\nteacher: {kind: gpt}\nwat: 1\n")
    assert run(str(bad), "--quiet") == 2
    with StubOpenAIServer(fail_first=[500] * 100) as stub:
        cfg = write_config(tmp_path, stub.base_url, limit=5, rounds=1,
                           teacher=f"{{kind: openai, base_url: '{stub.base_url}', model: s, retries: 1, backoff: 0.01}}")
        assert run(str(cfg), "--out", str(tmp_path / "o1"), "--quiet") == 1
    with StubOpenAIServer() as stub:
        cfg = write_config(tmp_path, stub.base_url, limit=12, rounds=1, name="ok.yaml")
        assert run(str(cfg), "--out", str(tmp_path / "o2"), "--quiet", "--max-batches", "1") == 1
        assert run(str(cfg), "--out", str(tmp_path / "o2"), "--quiet") == 0
        other = write_config(tmp_path, stub.base_url, limit=12, rounds=2, name="other.yaml")
        assert run(str(other), "--out", str(tmp_path / "o2"), "--quiet") == 2  # another config's output


def test_verifier_and_truncation_filters_count_rejections(tmp_path):
    with StubOpenAIServer() as stub:
        cfg = load_rsa_config(write_config(tmp_path, stub.base_url, rounds=1, extra="verifier: {enabled: true}\n"))
        res = run_rsa(cfg, tmp_path / "v")
    sft = pq.read_table(tmp_path / "v" / "sft").to_pylist()
    assert len(sft) == 21 and all(r["verified"] and r["aggregate_correct"] for r in sft)
    assert res.ledger.counts == {("rsa", "verifier_failed", "rsa_test"): 3}
    with StubOpenAIServer(max_tokens_cap=5) as stub:
        cfg = load_rsa_config(write_config(tmp_path, stub.base_url, rounds=1, limit=5, name="t.yaml"))
        res = run_rsa(cfg, tmp_path / "t")
    assert res.ledger.counts == {("rsa", "truncated", "rsa_test"): 10}
    assert not list((tmp_path / "t" / "sft").glob("*.parquet")) or \
        pq.read_table(tmp_path / "t" / "sft").num_rows == 0


def test_self_aggregation_generates_the_population_first(tmp_path):
    extra = "population: {c: 4, sampling: {temperature: 1.0, max_tokens: 64}}\n"
    with StubOpenAIServer() as stub:
        cfg = load_rsa_config(write_config(tmp_path, stub.base_url, limit=3, rounds=1, extra=extra))
        res = run_rsa(cfg, tmp_path / "self")
        pop_requests = [r for r in stub.requests if "Please reason step by step" in r["messages"][0]["content"]]
        assert len(pop_requests) == 3 * 4 and len(stub.requests) == 3 * 4 + 3 * 2
        assert all(r["temperature"] == 1.0 and r["max_tokens"] == 64 for r in pop_requests)
    pop = pq.read_table(tmp_path / "self" / "_state" / "population-b00000.parquet").to_pylist()
    assert len(pop) == 12 and all(r["answer"] in {"0", "1", "2", "3"} for r in pop)
    sft = pq.read_table(tmp_path / "self" / "sft").to_pylist()
    pop_ids = {r["candidate_id"] for r in pop}
    assert len(sft) == 6 and all(set(r["candidate_ids"]) <= pop_ids for r in sft)
    assert res.summary["rounds"]["1"]["population"] == 12


def test_tiny_zaya1_model_as_teacher_on_cpu(tmp_path):
    pytest.importorskip("torch")
    teacher = "{kind: zaya1, checkpoint: tiny, device: cpu, batch_size: 4, sampling: {max_tokens: 16, temperature: 0}}"
    text = write_config(tmp_path, "", limit=1, teacher=teacher, extra="reject_truncated: false\n").read_text()
    text = text.replace("subsets: {k: 4, m: 2, stratify: true}", "subsets: {k: 2, m: 2}").replace(
        "tau: 128", "tau: 32")
    (tmp_path / "tiny.yaml").write_text(text)
    res = run_rsa(load_rsa_config(tmp_path / "tiny.yaml"), tmp_path / "tiny")
    assert res.status == "complete"
    state = [r for p in sorted((tmp_path / "tiny" / "_state").glob("r*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert len(state) == 1 * 2 * 2  # 1 problem x M=2 x 2 rounds
    assert all(r["teacher"] == "zaya1:tiny" and 1 <= r["target_tokens"] <= 17 for r in state)
    assert all(r["finish_reason"] in ("stop", "length") for r in state)
    # Random weights write no final answer: whatever is not kept is counted, with its reason.
    assert sum(r["kept"] for r in state) + res.ledger.total() == 4
    assert set(res.ledger.counts) <= {("rsa", "no_final_answer", "rsa_test"), ("rsa", "empty_target", "rsa_test")}


def test_engine_teacher_writes_the_greedy_targets_of_the_generate_path():
    """`engine: true` routes the teacher through model.engine (continuous batching over the
    paged cache); greedy, it must write exactly what model.generate writes."""
    from zaya_data.rsa.config import TeacherSpec
    from zaya_data.rsa.model_teacher import LocalModelTeacher
    from zaya_data.tokenizer import load_tokenizer

    tok = load_tokenizer("embedded")
    reqs = [GenerationRequest(p, 7 + i) for i, p in enumerate(
        ["What is 2+2?", "Add 17 and 25, then halve it.", "x"])]
    sampling = Sampling(max_tokens=12, temperature=0.0)
    outs = {}
    for engine in ("on", "off"):
        spec = TeacherSpec(kind="zaya1", sampling=sampling, checkpoint="tiny", device="cpu", dtype="float32",
                           batch_size=2, engine=engine)
        teacher = LocalModelTeacher.from_spec(spec, tok)
        assert (teacher.engine is not None) == (engine == "on")
        outs[engine] = [(g.text, g.finish_reason, g.completion_tokens) for g in teacher.generate(reqs, sampling)]
    assert outs["on"] == outs["off"]
    assert [n for _, _, n in outs["on"]] == [12, 12, 12]


def test_engine_option_is_validated(tmp_path):
    cfg = write_config(tmp_path, "", teacher="{kind: zaya1, checkpoint: tiny, engine: sometimes}")
    with pytest.raises(ConfigError, match=r"teacher\.engine.*auto, true or false"):
        load_rsa_config(cfg)


def test_ray_actor_pool_returns_the_in_process_outputs_in_order():
    """The pool cuts fixed chunks before spreading them over actors, so what is drawn does
    not depend on the number of actors (run here with num_gpus=0 and the tiny model)."""
    from zaya_data.rsa.config import TeacherSpec
    from zaya_data.rsa.model_teacher import LocalModelTeacher, RayModelPool
    from zaya_data.tokenizer import load_tokenizer

    tok = load_tokenizer("embedded")
    spec = TeacherSpec(kind="zaya1", sampling=Sampling(), checkpoint="tiny", device="cpu", dtype="float32",
                       batch_size=2)
    reqs = [GenerationRequest(f"What is {i}+{i}?", 100 + i) for i in range(5)]
    sampling = Sampling(max_tokens=6, temperature=0.8)
    local = LocalModelTeacher.from_spec(spec, tok).generate(reqs, sampling)
    pool = RayModelPool(spec, num_actors=2, num_gpus=0)
    try:
        pooled = pool.generate(reqs, sampling)
    finally:
        pool.close()
    assert [(g.text, g.completion_tokens) for g in pooled] == [(g.text, g.completion_tokens) for g in local]
    assert all(g.completion_tokens == 6 for g in local) and len({g.text for g in local}) > 1


def test_output_does_not_depend_on_concurrency(tmp_path):
    with StubOpenAIServer() as stub:
        for n in (1, 8):
            teacher = f"{{kind: openai, base_url: '{stub.base_url}', model: stub, concurrency: {n}}}"
            cfg = load_rsa_config(write_config(tmp_path, stub.base_url, limit=6, teacher=teacher))
            run_rsa(cfg, tmp_path / f"c{n}")
    a, b = tree(tmp_path / "c1"), tree(tmp_path / "c8")
    assert a.pop("_state/run.json") != b.pop("_state/run.json")  # holds the config text as written
    assert a == b and len(a) == 18


def test_self_aggregation_from_a_problem_set_with_worked_solutions(tmp_path):
    minerva = DATA.parent / "minerva_math.jsonl"
    (tmp_path / "m.yaml").write_text(f"""input:
  path: {minerva}
  format: jsonl
  kind: reasoning
  fields: {{prompt: problem, trace: solution}}
  split: final_paragraph
  limit: 3
population: {{c: 4}}
subsets: {{k: 2, m: 2}}
teacher: {{kind: openai, base_url: BASE, model: stub}}
""")
    with StubOpenAIServer() as stub:
        (tmp_path / "m.yaml").write_text((tmp_path / "m.yaml").read_text().replace("BASE", stub.base_url))
        res = run_rsa(load_rsa_config(tmp_path / "m.yaml"), tmp_path / "out")
        assert len(stub.requests) == 3 * 4 + 3 * 2
    sft = pq.read_table(tmp_path / "out" / "sft").to_pylist()
    # the reference is the boxed answer of the problem's worked solution
    assert [r["reference_answer"] for r in sft[::2]] == ["1.6", "4.5e33", "41.8"]
    assert res.ledger.total() == 0 and len(sft) == 6
