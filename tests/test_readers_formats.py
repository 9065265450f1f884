"""Parquet, Hugging Face (save_to_disk and data files), plain text and reasoning-gym
sources, and how sources become read units."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zaya_data.ledger import Ledger, StrictModeError
from zaya_data.readers import ReadUnit, list_units, read_source, read_unit
from zaya_data.schema import DOCUMENT, REASONING, stable_id
from zaya_data.specs import SourceSpec

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MATH = DATA / "limo-eval" / "math.jsonl"
needs_data = pytest.mark.skipif(not MATH.is_file(), reason="../shared/data is not beside the checkout")
MATH_FIELDS = {"prompt": "problem", "reasoning": "solution"}


def spec(fmt: str, paths: tuple[str, ...], kind: str = "reasoning", fields: dict[str, str] | None = None,
         **options: object) -> SourceSpec:
    return SourceSpec(name="src", paths=paths, format=fmt, kind=kind, category="math",
                      fields=dict(MATH_FIELDS if fields is None and kind == "reasoning" else fields or {}),
                      options=dict(options), origin="mix.yaml:7")


def read(s: SourceSpec, ledger: Ledger | None = None, batch_size: int = 1024) -> tuple[pa.Table | None, Ledger]:
    ledger = ledger if ledger is not None else Ledger()
    tables = list(read_source(s, ledger, batch_size))
    return (pa.concat_tables(tables) if tables else None), ledger


def math_records() -> list[dict]:
    with MATH.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


# -- parquet ---------------------------------------------------------------------------
@needs_data
def test_parquet_in_small_row_groups_reads_like_the_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "math.parquet"
    pq.write_table(pa.Table.from_pylist(math_records()), path, row_group_size=64)
    from_parquet, ledger = read(spec("parquet", (str(path),)), batch_size=100)
    from_jsonl, _ = read(spec("jsonl", (str(MATH),)))
    assert ledger.total() == 0
    assert from_parquet.schema == REASONING
    assert from_parquet.num_rows == 500
    assert from_parquet.equals(from_jsonl)


@needs_data
def test_parquet_without_a_mapped_column_rejects_every_row_and_the_next_file_still_reads(tmp_path: Path) -> None:
    records = math_records()
    (tmp_path / "a").mkdir()
    bad = tmp_path / "a" / "0-no-solution.parquet"
    good = tmp_path / "a" / "1-good.parquet"
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k != "solution"} for r in records]), bad)
    pq.write_table(pa.Table.from_pylist(records[:20]), good)
    s = spec("parquet", (str(tmp_path / "a" / "*.parquet"),))
    table, ledger = read(s)
    assert table.num_rows == 20
    assert table["file_index"].to_pylist() == [1] * 20
    assert ledger.counts == {("read", "missing_field", "src"): 500}
    example = ledger.examples[("read", "missing_field", "src")][0]
    assert example["file"] == str(bad)
    assert example["location"] == "all 500 rows"
    assert example["detail"].startswith(f"field 'reasoning' needs column 'solution', which {bad} does not have")
    with pytest.raises(StrictModeError, match="field 'reasoning' needs column 'solution'"):
        read(s, Ledger(strict=True))


def test_parquet_rows_with_bad_values_are_counted_by_row(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["a", None, "", "b\x00", "c"], "k": [1, 2, 3, 4, 5]}), path)
    table, ledger = read(spec("parquet", (str(path),), kind="document"), batch_size=2)
    assert table["text"].to_pylist() == ["a", "c"]
    assert table["row_index"].to_pylist() == [0, 4]
    assert table["meta"].to_pylist() == ['{"k": 1}', '{"k": 5}']
    where = {(r, e["location"]) for (_s, r, _src), ex in ledger.examples.items() for e in ex}
    assert where == {("missing_field", "row 1"), ("empty_field", "row 2"), ("nul_byte", "row 3")}


# -- Hugging Face ----------------------------------------------------------------------
@needs_data
def test_hf_save_to_disk_folder_reads_like_the_jsonl_and_picks_the_split(tmp_path: Path) -> None:
    import datasets

    records = math_records()
    ds = datasets.Dataset.from_list(records)
    ds.save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"train": ds.select(range(10)), "test": ds.select(range(10, 500))}).save_to_disk(
        str(tmp_path / "dict"))
    from_jsonl, _ = read(spec("jsonl", (str(MATH),)))

    single, ledger = read(spec("hf", (str(tmp_path / "single"),)), batch_size=128)
    assert ledger.total() == 0
    assert single.equals(from_jsonl)

    test_split, _ = read(spec("hf", (str(tmp_path / "dict"),), split="test"))
    assert test_split["id"].to_pylist() == from_jsonl["id"].to_pylist()[10:]
    assert test_split["row_index"].to_pylist() == list(range(490))
    train_split, _ = read(spec("hf", (str(tmp_path / "dict"),)))
    assert train_split.num_rows == 10
    with pytest.raises(ValueError, match=r"has no split 'validation' \(splits: test, train\)"):
        read(spec("hf", (str(tmp_path / "dict"),), split="validation"))


@needs_data
def test_hf_local_data_files_load_offline_and_match_the_jsonl_reader(tmp_path: Path) -> None:
    records = math_records()[:50]
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "m.parquet")
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    expected, _ = read(spec("jsonl", (str(tmp_path / "m.jsonl"),)))
    for name in ("m.parquet", "m.jsonl"):
        table, ledger = read(spec("hf", (str(tmp_path / name),)), batch_size=16)
        assert ledger.total() == 0
        assert table.equals(expected), name


def test_hf_folder_that_is_not_a_saved_dataset_matches_nothing(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="matches no file or save_to_disk folder"):
        list_units(spec("hf", (str(tmp_path / "plain"),)))


# -- text ------------------------------------------------------------------------------
def test_stdlib_json_package_reads_one_document_per_file() -> None:
    folder = Path(sysconfig.get_paths()["stdlib"]) / "json"
    s = SourceSpec(name="stdlib_code", paths=(str(folder / "*.py"),), format="text", kind="document",
                   category="code", origin="mix.yaml:2")
    files = sorted(folder.glob("*.py"))
    assert [Path(u.path) for u in list_units(s)] == files
    table, ledger = read(s)
    assert ledger.total() == 0
    assert table.schema == DOCUMENT
    texts = [f.read_text(encoding="utf-8") for f in files]
    assert table["text"].to_pylist() == texts
    assert table["id"].to_pylist() == [stable_id("stdlib_code", t) for t in texts]
    assert table["file_index"].to_pylist() == list(range(len(files)))
    assert table["row_index"].to_pylist() == [0] * len(files)
    assert table["meta"].null_count == len(files)


def test_text_files_that_are_empty_short_binary_or_not_utf8_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "a_ok.txt").write_text("hello world\n")
    (tmp_path / "b_empty.txt").write_text("")
    (tmp_path / "c_blank.txt").write_text(" \n\n")
    (tmp_path / "d_latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "e_binary.txt").write_bytes(b"abc\x00def")
    (tmp_path / "f_short.txt").write_text("hi")
    s = SourceSpec(name="t", paths=(str(tmp_path / "*.txt"),), format="text", kind="document", category="web",
                   options={"min_chars": 3})
    table, ledger = read(s)
    assert table["text"].to_pylist() == ["hello world\n"]
    got = {(r, Path(e["file"]).name) for (_s, r, _src), ex in ledger.examples.items() for e in ex}
    assert got == {("empty_field", "b_empty.txt"), ("empty_field", "c_blank.txt"), ("invalid_utf8", "d_latin1.txt"),
                   ("nul_byte", "e_binary.txt"), ("too_short", "f_short.txt")}


def test_text_sources_must_be_documents_without_fields(tmp_path: Path) -> None:
    (tmp_path / "x.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="kind must be 'document'"):
        list_units(SourceSpec(name="t", paths=(str(tmp_path / "x.py"),), format="text", kind="reasoning", category="c"))
    with pytest.raises(ValueError, match="format text has no fields"):
        list_units(SourceSpec(name="t", paths=(str(tmp_path / "x.py"),), format="text", kind="document",
                              category="c", fields={"text": "body"}))


# -- reasoning-gym ---------------------------------------------------------------------
GSM = {"prompt": "question", "reasoning": "metadata.answer_cot", "answer": "answer"}


def test_gsm_symbolic_chunks_into_units_and_maps_its_chain_of_thought() -> None:
    import reasoning_gym

    s = spec("reasoning_gym", (), fields=GSM, dataset="gsm_symbolic", size=40, seed=1, chunk=15)
    units = list_units(s)
    assert units == [ReadUnit("src", 0, "reasoning_gym:gsm_symbolic", 0, 15),
                     ReadUnit("src", 1, "reasoning_gym:gsm_symbolic", 15, 30),
                     ReadUnit("src", 2, "reasoning_gym:gsm_symbolic", 30, 40)]
    table, ledger = read(s)
    assert ledger.total() == 0
    reference = reasoning_gym.create_dataset("gsm_symbolic", size=40, seed=1)
    items = [reference[i] for i in range(40)]
    assert table["prompt"].to_pylist() == [it["question"] for it in items]
    assert table["reasoning"].to_pylist() == [it["metadata"]["answer_cot"] for it in items]
    assert table["answer"].to_pylist() == [it["answer"] for it in items]
    assert table["row_index"].to_pylist() == list(range(40))
    assert table["file_index"].to_pylist() == [0] * 15 + [1] * 15 + [2] * 10
    assert "answer_cot" not in table["meta"][0].as_py()
    one_chunk, _ = read(spec("reasoning_gym", (), fields=GSM, dataset="gsm_symbolic", size=40, seed=1, chunk=40))
    assert one_chunk.drop(["file_index"]).equals(table.drop(["file_index"]))
    again, _ = read(s, batch_size=4)
    assert again.equals(table)


def test_reasoning_gym_items_with_a_null_answer_are_counted_not_emitted() -> None:
    # propositional_logic has answer=None (many conclusions are valid); its metadata
    # carries one example answer, which is what a source must map.
    null, ledger = read(spec("reasoning_gym", (), fields={"prompt": "question", "reasoning": "question",
                                                          "answer": "answer"}, dataset="propositional_logic", size=12))
    assert null is None
    assert ledger.counts == {("read", "missing_field", "src"): 12}
    assert ledger.examples[("read", "missing_field", "src")][0]["location"] == "item 0"
    ok, ledger = read(spec("reasoning_gym", (), fields={"prompt": "question", "reasoning": "question",
                                                        "answer": "metadata.example_answer"},
                           dataset="propositional_logic", size=12))
    assert ledger.total() == 0 and ok.num_rows == 12


def test_reasoning_gym_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match=r"source 'src' \(mix.yaml:7\): options.chunk must be an integer >= 1"):
        list_units(spec("reasoning_gym", (), fields=GSM, dataset="gsm_symbolic", size=10, chunk=0))
    s = spec("reasoning_gym", (), fields=GSM, dataset="no_such_dataset", size=10)
    with pytest.raises(ValueError, match="create_dataset\\('no_such_dataset'\\)"):
        read(s)


# -- units -----------------------------------------------------------------------------
def test_a_glob_matching_nothing_names_the_source_glob_and_origin(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    pattern = str(tmp_path / "missing" / "*.jsonl")
    s = spec("jsonl", (str(tmp_path / "a.jsonl"), pattern), kind="document")
    with pytest.raises(ValueError) as err:
        list_units(s)
    assert str(err.value) == f"source 'src' (mix.yaml:7): path {pattern!r} matches no file"
    with pytest.raises(ValueError, match="it is a folder: give a glob such as"):
        list_units(spec("jsonl", (str(tmp_path),), kind="document"))


def test_double_star_globs_recurse_and_units_are_sorted(tmp_path: Path) -> None:
    for rel in ("b/2.jsonl", "a/x/1.jsonl", "a/0.jsonl", "a/skip.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text('{"text": "x"}\n')
    units = list_units(spec("jsonl", (str(tmp_path / "**" / "*.jsonl"),), kind="document"))
    assert [(u.file_index, Path(u.path).relative_to(tmp_path).as_posix()) for u in units] == [
        (0, "a/0.jsonl"), (1, "a/x/1.jsonl"), (2, "b/2.jsonl")]
    table = pa.concat_tables(read_unit(spec("jsonl", (), kind="document"), units[2], Ledger()))
    assert table["file_index"].to_pylist() == [2]


def test_hf_dataset_without_a_mapped_column_rejects_every_row(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_dict({"problem": ["p1", "p2", "p3"], "answer": ["1", "2", "3"]}).save_to_disk(
        str(tmp_path / "ds"))
    table, ledger = read(spec("hf", (str(tmp_path / "ds"),)))
    assert table is None
    assert ledger.counts == {("read", "missing_field", "src"): 3}
    assert ledger.examples[("read", "missing_field", "src")][0]["detail"].startswith(
        "field 'reasoning' needs column 'solution'")
