"""`zaya-data explain` on a real small build: a near duplicate names its survivor, a
decontaminated record names the benchmark item, a trimmed record is found in its shard,
an unselected one says so; unknown ids exit 1; the fate index accounts for every input
record and is the same bytes on Ray with 2 workers as in process."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from zaya_data.cli import main
from zaya_data.explain import explain

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

MIX = """\
name: explain
seed: 5
clean:
  exact_dedup: true
  near_dedup: true
  decontaminate:
    benchmarks:
      - {{name: aime24, path: {data}/limo-eval/aime.jsonl}}
sources:
  rollouts:
    path: {data}/qwen25-math-eval/math_cot_100_rollouts8.jsonl
    format: jsonl
    kind: reasoning
    category: math
    fields: {{prompt: question, trace: "code[0]", reference_answer: gt}}
    split: final_paragraph
  docs:
    path: docs.jsonl
    format: jsonl
    category: web
    fields: {{text: text}}
  gsm:
    path: {data}/qwen25-math-eval/gsm8k.jsonl
    format: jsonl
    category: web
    fields: {{text: question}}
    clean: {{near_dedup: false, exact_dedup: false}}
phases:
  short:
    context: 512
    token_budget: 60K
    weights: {{rollouts: 1, docs: 1, gsm: 1}}
    max_repetition: 2
    shard_rows: 32
  rl:
    kind: prompts
    prompt_budget: 60
    weights: {{rollouts: 1}}
    max_repetition: 2
    clean:  # replaces the top-level decontaminate (and keeps its dedup keys)
      decontaminate:
        benchmarks:
          - {{name: math500, path: {data}/limo-eval/math.jsonl}}
"""

N_SOLUTIONS = 272  # minerva_math.jsonl
EDITED = list(range(0, 20, 2))  # solutions that get a lightly edited copy


def _edit(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    for _ in range(max(1, len(words) // 100)):
        words[rng.randrange(len(words))] = "thus"
    return " ".join(words)


@pytest.fixture(scope="module")
def mixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("explain_mix")
    rng = random.Random(0)
    sols = [json.loads(x)["solution"] for x in (DATA / "qwen25-math-eval" / "minerva_math.jsonl").open()]
    aime = [json.loads(x) for x in (DATA / "qwen25-math-eval" / "aime24.jsonl").open()]
    assert len(sols) == N_SOLUTIONS
    texts = sols + [_edit(sols[i], rng) for i in EDITED]
    # an AIME 2024 problem (the qwen copy) inside a practice document, and a second one
    # upper-cased with LaTeX thin spaces: both must be caught against the LIMO copy
    texts.append("Practice set, problem 1.\n" + aime[3]["problem"] + "\nShow your work.")
    texts.append("PRACTICE:\n" + aime[7]["problem"].upper().replace("$", "$\\,").replace(" ", "  "))
    (d / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    p = d / "mix.yaml"
    p.write_text(MIX.format(data=DATA))
    return p


@pytest.fixture(scope="module")
def out(mixture: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    o = tmp_path_factory.mktemp("explain_out")
    assert main(["build", str(mixture), "--out", str(o), "--no-ray", "--quiet"]) == 0
    return o


def _index(out: Path, phase: str = "short"):
    return pq.read_table(out / phase / "records.parquet")


def _row(t, **eq) -> dict:
    m = None
    for k, v in eq.items():
        c = pc.equal(t[k], v)
        m = c if m is None else pc.and_(m, c)
    rows = t.filter(m).to_pylist()
    assert len(rows) == 1, (eq, len(rows))
    return rows[0]


def _steps(res: dict, phase: str = "short") -> dict[str, dict]:
    (occ,) = res["phases"][phase]["occurrences"]
    return {s["step"]: s for s in occ["steps"]}


def test_the_fate_index_accounts_for_every_input_record(out: Path) -> None:
    t = _index(out)
    m = json.loads((out / "short" / "manifest.json").read_text())
    assert m["records"]["rows"] == t.num_rows
    for name, s in m["sources"].items():
        mine = t.filter(pc.equal(t["source"], name))
        fates = mine["fate"].to_pylist()
        assert mine.num_rows == s["input_records"], name
        assert fates.count("packed") == s["unique_documents"], name
        assert fates.count("not_selected") == s["not_selected_records"], name
        assert fates.count("dropped") == s["rejected_records"], name
    docs = t.filter(pc.equal(t["source"], "docs"))
    assert docs.num_rows == N_SOLUTIONS + len(EDITED) + 2
    assert docs["row_index"].to_pylist() == list(range(docs.num_rows))  # canonical order


def test_a_near_duplicate_names_its_survivor(out: Path) -> None:
    t = _index(out)
    # solution 4 and its edited copy: one of them is dropped, naming the other
    a = _row(t, source="docs", row_index=4)
    b = _row(t, source="docs", row_index=N_SOLUTIONS + EDITED.index(4))
    dropped, survivor = (a, b) if a["fate"] == "dropped" else (b, a)
    assert (dropped["stage"], dropped["reason"]) == ("dedup", "near_duplicate")
    assert survivor["fate"] in ("packed", "not_selected")
    res = explain(out, dropped["id"][:16])
    assert res["status"] == "found" and res["id"] == dropped["id"]
    step = _steps(res)["exact / near dedup"]
    assert step["status"] == "dropped" and step["reason"] == "near_duplicate"
    assert step["survivor"] == survivor["id"] and step["survivor_source"] == "docs"
    assert step["survivor_fate"] == survivor["fate"]
    assert _steps(res)["decontamination"]["status"] == "passed"
    assert _steps(res)["packing"]["status"] == "not reached"


def test_decontaminated_records_name_the_benchmark_item(out: Path) -> None:
    t = _index(out)
    limo = [json.loads(x) for x in (DATA / "limo-eval" / "aime.jsonl").open()]
    qwen = [json.loads(x) for x in (DATA / "qwen25-math-eval" / "aime24.jsonl").open()]
    for row_index, k in ((N_SOLUTIONS + len(EDITED), 3), (N_SOLUTIONS + len(EDITED) + 1, 7)):
        r = _row(t, source="docs", row_index=row_index)
        assert r["fate"] == "dropped" and r["stage"] == "decontaminate"
        step = _steps(explain(out, r["id"]))["decontamination"]
        item = next(i for i, x in enumerate(limo) if str(x["id"]) == str(qwen[k]["id"]))
        assert step["status"] == "dropped"
        assert step["matches"] == [{"benchmark": "aime24", "item": item, "item_id": str(limo[item]["id"]),
                                    "match": "ngram"}]
    report = json.loads((out / "short" / "decontamination.json").read_text())
    assert report["summary"] == {"aime24": {"items_matched": 2, "records_matched": 2, "sources": ["docs"]}}


def test_the_build_records_checksums_that_verify_checks(out: Path) -> None:
    from zaya_data.io import sha256_file
    from zaya_data.verify import verify_phase

    m = json.loads((out / "short" / "manifest.json").read_text())
    assert m["cleaning"]["decontamination"] == {"file": "decontamination.json",
                                                "sha256": sha256_file(out / "short" / "decontamination.json")}
    assert m["records"]["sha256"] == sha256_file(out / "short" / "records.parquet")
    assert verify_phase(out / "short").ok


def test_a_trimmed_record_is_found_in_its_shard(out: Path) -> None:
    t = _index(out)
    cand = t.filter(pc.and_(pc.equal(t["fate"], "packed"), pc.greater(t["trimmed_tokens"], 0)))
    assert cand.num_rows > 0
    r = cand.slice(0, 1).to_pylist()[0]
    assert r["source"] == "rollouts" and r["tokens"] <= 512
    res = explain(out, r["id"])
    steps = _steps(res)
    tok = steps["tokenize / trim"]
    assert tok["trimmed"] is True and tok["tokens"] == r["tokens"] and tok["trimmed_tokens"] == r["trimmed_tokens"]
    assert steps["mixing"]["status"] == "selected" and steps["mixing"]["epochs"] == len(r["placements"])
    (place, *_) = steps["packing"]["placements"]
    shard = pq.read_table(out / "short" / place["file"]).slice(place["row"], 1).to_pylist()[0]
    assert shard["segment_ids"][place["segment"]] == r["id"]
    assert shard["segment_lengths"][place["segment"]] == r["tokens"]
    assert place["verified"] is True


def test_an_unselected_record_and_a_trim_rejection(out: Path) -> None:
    t = _index(out)
    r = t.filter(pc.and_(pc.equal(t["source"], "gsm"), pc.equal(t["fate"], "not_selected"))).slice(0, 1).to_pylist()[0]
    steps = _steps(explain(out, r["id"]))
    assert steps["exact / near dedup"]["status"] == "off"  # gsm turns dedup off for itself
    assert steps["mixing"] == {"step": "mixing", "status": "not selected", "epochs": 0,
                               "detail": "the source's target was reached before this record in the seeded "
                                         "selection order"}
    assert steps["packing"]["status"] == "not reached"
    trim = t.filter(pc.equal(t["stage"], "trim")).to_pylist()
    assert [x["reason"] for x in trim] == ["prompt_and_answer_exceed_context"] * len(trim) and trim
    steps = _steps(explain(out, trim[0]["id"]))
    assert steps["tokenize / trim"]["status"] == "dropped" and steps["mixing"]["status"] == "not reached"


def test_cli_exit_codes_and_json(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = _index(out)
    rid = _row(t, source="docs", row_index=0)["id"]
    assert main(["explain", str(out), rid, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == "found" and data["id"] == rid
    assert main(["explain", str(out), "docs:does-not-exist"]) == 1
    assert "no record" in capsys.readouterr().err
    assert main(["explain", str(out), "docs:"]) == 2  # a prefix of many ids
    assert "ambiguous" in capsys.readouterr().err
    assert main(["explain", str(out / "nope"), rid]) == 2
    assert main(["explain", str(out), rid]) == 0
    assert "exact / near dedup" in capsys.readouterr().out


def test_rl_prompts_are_decontaminated_and_explained(out: Path) -> None:
    from zaya_data.clean.normalize import problem_key

    t = _index(out, "rl")
    m = json.loads((out / "rl" / "manifest.json").read_text())
    s = m["sources"]["rollouts"]
    fates = t["fate"].to_pylist()
    assert t.num_rows == s["input_records"] == 100
    assert fates.count("dropped") == s["rejected_records"] > 0
    assert fates.count("selected") == s["unique_prompts"]
    assert set(t.filter(pc.equal(t["fate"], "dropped"))["stage"].to_pylist()) == {"decontaminate"}
    math500 = [json.loads(x) for x in (DATA / "limo-eval" / "math.jsonl").open()]
    rollouts = [json.loads(x) for x in (DATA / "qwen25-math-eval" / "math_cot_100_rollouts8.jsonl").open()]
    exact = t.filter(pc.equal(t["reason"], "math500:exact")).to_pylist()
    assert exact
    for r in exact:
        steps = _steps(explain(out, r["id"]), "rl")
        (match,) = steps["decontamination"]["matches"]
        assert problem_key(math500[match["item"]]["problem"]) == problem_key(rollouts[r["row_index"]]["question"])
        assert match["item_id"] == math500[match["item"]]["unique_id"]
        assert steps["prompt set"]["status"] == "not reached"
    kept = t.filter(pc.equal(t["fate"], "selected")).slice(0, 1).to_pylist()[0]
    (place,) = _steps(explain(out, kept["id"]), "rl")["prompt set"]["placements"]
    written = pq.read_table(out / "rl" / "prompts-00000.parquet").slice(place["row"], 1).to_pylist()[0]
    assert (written["id"], written["row_index"]) == (kept["id"], kept["row_index"])


def test_two_ray_workers_write_the_same_bytes(mixture: Path, out: Path, tmp_path: Path) -> None:
    o = tmp_path / "ray2"
    assert main(["build", str(mixture), "--out", str(o), "--workers", "2", "--quiet"]) == 0
    for phase, name in [*((ph, n) for ph in ("short", "rl") for n in ("records.parquet", "decontamination.json",
                                                                       "ledger.json")),
                        ("rl", "prompts-00000.parquet"),
                        *(("short", p.name) for p in sorted((out / "short").glob("shard-*.parquet")))]:
        assert (o / phase / name).read_bytes() == (out / phase / name).read_bytes(), (phase, name)
