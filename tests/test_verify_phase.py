"""`verify_phase` passes a good phase and names the file, row and fault of a bad one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zaya_data.io import sha256_file
from zaya_data.manifest import ManifestError, read_manifest, totals_from_shards, write_manifest
from zaya_data.packing import best_fit_decreasing
from zaya_data.schema import TOKENIZED
from zaya_data.shards import assemble_rows, write_shards
from zaya_data.verify import verify_phase

CONTEXT = 16
PAD = 0


def build_phase(phase: Path) -> dict:
    lengths = [9, 7, 5, 11, 3, 12, 16, 2, 6, 13]
    sources = ["math", "code", "math", "web", "code", "math", "web", "code", "math", "web"]
    rows = [
        {
            "id": f"{s}:{i}", "source": s, "category": s, "file_index": 0, "row_index": i, "piece": 0,
            "input_ids": [1 + (7 * i + k) % 50 for k in range(n)], "loss_mask": [k % 2 for k in range(n)],
            "num_tokens": n, "loss_tokens": n // 2, "trimmed": False, "trimmed_tokens": 0,
        }
        for i, (n, s) in enumerate(zip(lengths, sources))
    ]
    items = pa.Table.from_pylist(rows, schema=TOKENIZED)
    bins = best_fit_decreasing(np.array(lengths), CONTEXT)
    shards = write_shards(assemble_rows(items, bins, CONTEXT, PAD), phase, rows_per_shard=3)
    per_source: dict[str, dict] = {}
    for n, s in zip(lengths, sources):
        d = per_source.setdefault(s, {"category": s, "tokens": 0, "segments": 0})
        d["tokens"] += n
        d["segments"] += 1
    manifest = {
        "format_version": 1, "tool": "zaya-data", "tool_version": "test", "phase": "p", "kind": "packed",
        "context": CONTEXT, "rope_base": None, "seed": 0, "created_by_command": "test",
        "tokenizer": {"path": "x", "sha256": "0", "vocab_size": 64, "pad_id": PAD, "bos_id": None, "eos_id": None, "special": {}},
        "sources": per_source, "totals": totals_from_shards(shards, CONTEXT), "shards": shards, "ledger": "ledger.json",
    }
    write_manifest(phase, manifest)
    return manifest


def messages(report) -> list[str]:
    return [str(p) for p in report.problems]


def test_good_phase_verifies_deep_and_shallow(tmp_path: Path) -> None:
    m = build_phase(tmp_path)
    assert m["totals"]["rows"] == 6 and m["totals"]["tokens"] == 84 and len(m["shards"]) == 2
    # BFD rows: [16] [13,3] [12,2] | [11,5] [9,7] [6]; padding only in rows 2 and 5
    assert [r["num_padding"] for r in pq.read_table(tmp_path / "shard-00000.parquet").to_pylist()] == [0, 0, 2]
    deep = verify_phase(tmp_path)
    assert deep.ok, messages(deep)
    assert (deep.shards_checked, deep.rows_checked) == (2, 6)
    assert verify_phase(tmp_path, deep=False).ok


def test_flipped_byte_is_a_sha_mismatch(tmp_path: Path) -> None:
    build_phase(tmp_path)
    p = tmp_path / "shard-00001.parquet"
    data = bytearray(p.read_bytes())
    data[8] ^= 0xFF  # inside the first column chunk, not the footer
    p.write_bytes(bytes(data))
    out = messages(verify_phase(tmp_path, deep=False))
    assert len(out) == 1 and out[0].startswith("shard-00001.parquet: sha256 ")


def test_missing_and_stray_shards_and_temporaries_are_named(tmp_path: Path) -> None:
    build_phase(tmp_path)
    (tmp_path / "shard-00001.parquet").rename(tmp_path / "shard-00009.parquet")
    (tmp_path / ".shard-00003.parquet.tmp-123").write_bytes(b"")
    out = messages(verify_phase(tmp_path))
    assert out == [
        ".shard-00003.parquet.tmp-123: temporary file left by an interrupted write",
        "shard-00009.parquet: shard file not listed in the manifest",
        "shard-00001.parquet: listed in the manifest but missing",
    ]


def test_edited_manifest_token_count_is_caught(tmp_path: Path) -> None:
    m = build_phase(tmp_path)
    m["sources"]["math"]["tokens"] += 1
    m["totals"]["tokens"] += 1
    write_manifest(tmp_path, m)
    out = messages(verify_phase(tmp_path))
    assert "manifest.json: totals.tokens is 85 but the shard entries add up to 84" in out
    assert "manifest.json: totals.tokens: manifest says 85, shards hold 84" in out
    assert "manifest.json: sources.math.tokens: manifest says 33, shards hold 32" in out
    assert len(out) == 3


def test_bad_rows_with_matching_sha_fail_the_deep_checks_only(tmp_path: Path) -> None:
    m = build_phase(tmp_path)
    p = tmp_path / "shard-00000.parquet"
    t = pq.read_table(p)
    rows = t.to_pylist()
    rows[0]["input_ids"] = rows[0]["input_ids"][:-1]  # one token short
    rows[2]["input_ids"][-1] = 5  # a padding position that is not the pad id
    rows[2]["loss_mask"][-1] = 1  # ... with loss on it
    rows[1]["segment_sources"] = rows[1]["segment_sources"][:-1]
    pq.write_table(pa.Table.from_pylist(rows, schema=t.schema), p, compression="zstd")
    m["shards"][0].update(sha256=sha256_file(p), bytes=p.stat().st_size)
    write_manifest(tmp_path, m)
    assert verify_phase(tmp_path, deep=False).ok
    out = messages(verify_phase(tmp_path))
    assert out == [
        f"shard-00000.parquet row 0: input_ids has {CONTEXT - 1} tokens, context is {CONTEXT}",
        f"shard-00000.parquet row 0: loss_mask has {CONTEXT} values, input_ids {CONTEXT - 1}",
        "shard-00000.parquet row 1: segment_sources has 1 entries, segment_lengths 2",
        f"shard-00000.parquet row 2: a padding position holds a token other than pad id {PAD}",
        "shard-00000.parquet row 2: a padding position has loss_mask 1",
        "shard-00000.parquet: loss_tokens: manifest says 22, shards hold 23",
        "manifest.json: totals.loss_tokens: manifest says 39, shards hold 40",
    ]


def test_missing_or_broken_manifest_is_reported_with_its_path(tmp_path: Path) -> None:
    out = messages(verify_phase(tmp_path))
    assert out == [f"manifest.json: {tmp_path / 'manifest.json'}: no manifest (the phase was never finished, or this is not a phase directory)"]
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match=str(tmp_path / "manifest.json") + ": cannot parse manifest"):
        read_manifest(tmp_path)


def test_manifest_is_sorted_indented_and_last(tmp_path: Path) -> None:
    m = build_phase(tmp_path)
    text = (tmp_path / "manifest.json").read_text()
    assert text == json.dumps(m, sort_keys=True, indent=1) + "\n"
    assert read_manifest(tmp_path) == m



def add_sidecars(phase: Path, m: dict) -> dict:
    """A fate index and a decontamination report, with the checksums a build records."""
    pq.write_table(pa.table({"id": [f"math:{i}" for i in range(10)], "fate": ["selected"] * 10}),
                   phase / "records.parquet")
    (phase / "decontamination.json").write_text('{"matches": [], "summary": {}}\n')
    m["records"] = {"file": "records.parquet", "rows": 10, "sha256": sha256_file(phase / "records.parquet")}
    m["cleaning"] = {"decontamination": {"file": "decontamination.json",
                                         "sha256": sha256_file(phase / "decontamination.json")}}
    write_manifest(phase, m)
    return m


def test_fate_index_and_decontamination_report_are_checked(tmp_path: Path) -> None:
    m = add_sidecars(tmp_path, build_phase(tmp_path))
    assert verify_phase(tmp_path).ok and verify_phase(tmp_path, deep=False).ok
    listed = m["records"]["sha256"]
    # a record's fate rewritten: a readable Parquet file, with the right row count
    pq.write_table(pa.table({"id": [f"math:{i}" for i in range(10)], "fate": ["selected"] * 9 + ["rejected"]}),
                   tmp_path / "records.parquet")
    (tmp_path / "decontamination.json").write_text('{"matches": [], "summary": {"x": 1}}\n')
    out = messages(verify_phase(tmp_path, deep=False))
    assert out == [
        f"records.parquet: sha256 {sha256_file(tmp_path / 'records.parquet')} does not match the manifest's {listed}",
        f"decontamination.json: sha256 {sha256_file(tmp_path / 'decontamination.json')} does not match the "
        f"manifest's {m['cleaning']['decontamination']['sha256']}",
    ]
    (tmp_path / "records.parquet").unlink()
    assert messages(verify_phase(tmp_path))[0] == "records.parquet: listed in the manifest (records) but missing"


def test_fate_index_row_count_and_older_manifests(tmp_path: Path) -> None:
    m = add_sidecars(tmp_path, build_phase(tmp_path))
    m["records"]["rows"] = 11
    write_manifest(tmp_path, m)
    assert messages(verify_phase(tmp_path)) == ["records.parquet: rows: manifest says 11, the file holds 10"]
    # a manifest from before checksums named the report only: its presence is all there is to check
    m["records"]["rows"] = 10
    m["cleaning"]["decontamination"] = "decontamination.json"
    write_manifest(tmp_path, m)
    (tmp_path / "decontamination.json").write_text("{}\n")
    assert verify_phase(tmp_path).ok
    (tmp_path / "decontamination.json").unlink()
    assert messages(verify_phase(tmp_path)) == [
        "decontamination.json: listed in the manifest (cleaning.decontamination) but missing"]
