"""Every file of ../shared/data reads as its natural kind, with exact counts and values,
and every record is accounted for (emitted + rejected == records in the file)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from zaya_data.ledger import Ledger
from zaya_data.readers import list_units, read_source
from zaya_data.schema import DOCUMENT, REASONING, ROLLOUT_GROUP, stable_id
from zaya_data.specs import SourceSpec

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
QWEN = DATA / "qwen25-math-eval"
LIMO = DATA / "limo-eval"
ROLLOUTS = QWEN / "math_cot_100_rollouts8.jsonl"

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not beside the checkout")


def spec(name: str, path: Path, kind: str, fields: dict[str, str], split: str | None = None) -> SourceSpec:
    return SourceSpec(name=name, paths=(str(path),), format="jsonl", kind=kind, category="math",
                      fields=fields, split=split, origin="test")


def read_all(s: SourceSpec, batch_size: int = 1024) -> tuple[pa.Table, Ledger]:
    ledger = Ledger()
    tables = list(read_source(s, ledger, batch_size))
    return pa.concat_tables(tables), ledger


def raw_lines(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# (file, kind, fields, split, emitted, {reason: count})
CASES = [
    (LIMO / "aime.jsonl", "reasoning", {"prompt": "problem", "reasoning": "solution"}, None, 30, {}),
    (LIMO / "amc.jsonl", "document", {"text": "question"}, None, 40, {}),
    (LIMO / "math.jsonl", "reasoning", {"prompt": "problem", "reasoning": "solution"}, None, 500, {}),
    (LIMO / "olympiadbench.jsonl", "document", {"text": "question"}, None, 675, {}),
    (QWEN / "aime24.jsonl", "reasoning", {"prompt": "problem", "reasoning": "solution"}, None, 30, {}),
    (QWEN / "amc23.jsonl", "document", {"text": "question"}, None, 40, {}),
    (QWEN / "gsm8k.jsonl", "reasoning", {"prompt": "question", "trace": "answer"}, "final_paragraph", 1319, {}),
    # 105 Minerva solutions are one line ("... $\\boxed{x}$."): no reasoning to split off.
    (QWEN / "minerva_math.jsonl", "reasoning", {"prompt": "problem", "trace": "solution"}, "final_paragraph",
     167, {"empty_field": 105}),
    (QWEN / "olympiadbench.jsonl", "reasoning",
     {"prompt": "question", "reasoning": "solution[0]", "answer": "final_answer[-1]"}, None, 675, {}),
    (ROLLOUTS, "rollout_group",
     {"problem": "question", "rollouts": "code", "rollout_answers": "pred", "reference_answer": "gt"}, None, 100, {}),
]


@pytest.mark.parametrize("path,kind,fields,split,emitted,rejected", CASES, ids=lambda v: getattr(v, "name", None))
def test_every_shared_file_reads_as_its_kind_with_every_record_accounted(
    path: Path, kind: str, fields: dict[str, str], split: str | None, emitted: int, rejected: dict[str, int]
) -> None:
    table, ledger = read_all(spec("s", path, kind, fields, split))
    schema = {"document": DOCUMENT, "reasoning": REASONING, "rollout_group": ROLLOUT_GROUP}[kind]
    assert table.schema == schema
    assert table.num_rows == emitted
    assert {reason: n for (_stage, reason, _src), n in ledger.counts.items()} == rejected
    assert table.num_rows + ledger.total() == len(raw_lines(path))
    assert table["file_index"].to_pylist() == [0] * emitted


def test_shared_folder_has_no_file_these_tests_skip() -> None:
    covered = {c[0].name if c[0].parent == QWEN else f"limo/{c[0].name}" for c in CASES}
    present = {p.name if p.parent == QWEN else f"limo/{p.name}" for p in DATA.rglob("*.jsonl")}
    assert present == covered


def test_rollouts_file_is_100_groups_of_8_with_their_extracted_answers() -> None:
    s = spec("qwen_rollouts", ROLLOUTS, "rollout_group",
             {"problem": "question", "rollouts": "code", "rollout_answers": "pred", "reference_answer": "gt"})
    table, ledger = read_all(s, batch_size=32)
    raw = raw_lines(ROLLOUTS)
    assert ledger.total() == 0
    assert [len(r) for r in table["rollouts"].to_pylist()] == [8] * 100
    first = table.slice(0, 1).to_pylist()[0]
    assert first["problem"] == raw[0]["question"]
    assert first["reference_answer"] == "420"
    assert first["problem_id"] == stable_id("qwen_rollouts", raw[0]["question"])
    assert [r["answer"] for r in first["rollouts"]] == ["420"] * 8
    assert [r["text"] for r in first["rollouts"]] == raw[0]["code"]
    assert first["rollouts"][3]["id"] == stable_id(first["problem_id"], raw[0]["code"][3])
    assert table["row_index"].to_pylist() == list(range(100))
    # meta keeps the small unmapped fields, drops the 6 KB `response` list and says so
    meta = json.loads(first["meta"])
    assert meta["level"] == "Level 3" and meta["score"] == [True] * 8 and meta["idx"] == 0
    assert meta["_dropped"] == ["response"]
    assert "code" not in meta and "question" not in meta and "gt" not in meta and "pred" not in meta


def test_rollouts_file_as_reasoning_cuts_the_first_rollout_at_its_final_paragraph() -> None:
    s = spec("r", ROLLOUTS, "reasoning", {"prompt": "question", "trace": "code[0]"}, "final_paragraph")
    table, ledger = read_all(s)
    raw = raw_lines(ROLLOUTS)
    assert ledger.total() == 0 and table.num_rows == 100
    row = table.slice(0, 1).to_pylist()[0]
    assert row["answer"] == (
        "Therefore, the value of \\(10.0000198 \\cdot 5.9999985401 \\cdot 6.9999852\\) to the nearest "
        "whole number is \\(\\boxed{420}\\)."
    )
    assert row["reasoning"].endswith("\\[\n60 \\cdot 7 = 420\n\\]")
    assert raw[0]["code"][0].strip() == row["reasoning"] + "\n\n" + row["answer"]
    assert row["id"] == stable_id("r", row["prompt"], row["reasoning"], row["answer"])


def test_limo_math_solution_is_the_reasoning_and_answer_the_answer() -> None:
    s = spec("limo_math", LIMO / "math.jsonl", "reasoning", {"prompt": "problem", "reasoning": "solution"})
    table, _ = read_all(s)
    raw = raw_lines(LIMO / "math.jsonl")
    assert table["prompt"].to_pylist() == [r["problem"] for r in raw]
    assert table["reasoning"].to_pylist() == [r["solution"] for r in raw]
    assert table["answer"].to_pylist()[0] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert json.loads(table["meta"][0].as_py()) == {
        "level": 2, "subject": "Precalculus", "unique_id": "test/precalculus/807.json",
    }


def test_numeric_answers_become_text_and_integral_floats_lose_their_point() -> None:
    # AMC answers are JSON floats (27.0); the answer the model must produce is "27".
    s = spec("amc", QWEN / "amc23.jsonl", "reasoning", {"prompt": "question", "reasoning": "question"})
    table, _ = read_all(s)
    assert table["answer"].to_pylist()[:5] == ["27", "36", "45", "3159", "36"]


def test_gsm8k_final_paragraph_of_a_single_paragraph_is_its_last_line() -> None:
    s = spec("gsm8k", QWEN / "gsm8k.jsonl", "reasoning", {"prompt": "question", "trace": "answer"}, "final_paragraph")
    table, _ = read_all(s)
    assert table["answer"].to_pylist()[:3] == ["#### 18", "#### 3", "#### 70000"]
    assert table["reasoning"][0].as_py() == (
        "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
        "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer\u2019s market."
    )


def test_one_source_over_two_folders_numbers_files_in_sorted_order() -> None:
    s = SourceSpec(name="both", paths=(str(QWEN / "a*.jsonl"), str(DATA / "**" / "aime*.jsonl")), format="jsonl",
                   kind="document", category="math", fields={"text": "problem"}, origin="test")
    units = list_units(s)
    assert [(u.file_index, Path(u.path).relative_to(DATA).as_posix()) for u in units] == [
        (0, "limo-eval/aime.jsonl"), (1, "qwen25-math-eval/aime24.jsonl"), (2, "qwen25-math-eval/amc23.jsonl"),
    ]
    table, _ = read_all(s)
    assert table.num_rows == 30 + 30 + 40
    assert table["file_index"].to_pylist() == [0] * 30 + [1] * 30 + [2] * 40


def test_every_source_of_the_demo_mixture_reads_without_a_rejection() -> None:
    from zaya_data.config import load_mixture

    mix = load_mixture(Path(__file__).resolve().parents[1] / "mixtures" / "demo.yaml")
    counts = {}
    for name, s in mix.sources.items():
        ledger = Ledger()
        counts[name] = sum(t.num_rows for t in read_source(s, ledger))
        assert ledger.total() == 0, name
    # one document per stdlib .py file / doc file; generated and packaged sets by size
    assert counts["stdlib_code"] == len(list_units(mix.sources["stdlib_code"]))
    assert counts["python_docs"] == len(list_units(mix.sources["python_docs"]))
    assert {k: v for k, v in counts.items() if k not in ("stdlib_code", "python_docs")} == {
        "gsm_symbolic_cot": 2000, "logic_prompts": 300, "hanoi_prompts": 300, "humaneval": 164,
    }
