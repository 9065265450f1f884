"""The planner's per-item metadata: written by the tokenize workers beside their parts,
read (or, for parts without it, recomputed) by the driver, and the same plan either way."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from mixtures import three_source_mixture
from zaya_data.cli import main
from zaya_data.mixing import record_hashes
from zaya_data.plan import load_source_items, meta_path, part_meta, read_part_meta
from zaya_data.tasks import read_part


def _build(tmp_path: Path, out: str) -> Path:
    mix = three_source_mixture(tmp_path, name="meta", context=384)
    assert main(["build", str(mix), "--out", str(tmp_path / out), "--no-ray", "--quiet"]) == 0
    return tmp_path / out


def _parts(out: Path) -> list[Path]:
    return sorted(p for p in (out / "_work").glob("p-*/parts/*/unit-*.arrow")
                  if not p.name.endswith((".meta.arrow", ".fates.arrow")))


def _digests(phase: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(phase.iterdir()) if p.is_file()}


def _items_by_hand(parts: list[tuple[int, str]]) -> dict[str, np.ndarray | list]:
    """What the planner needs, the plain way: every part's columns to Python, records at
    piece 0, their hashes computed from the ids here."""
    t = pa.concat_tables([read_part(p) for _, p in parts])
    piece = np.array(t["piece"].to_pylist())
    start = np.nonzero(piece == 0)[0]
    ids = t["id"].to_pylist()
    fi = np.array(t["file_index"].to_pylist(), np.int64)
    ri = np.array(t["row_index"].to_pylist(), np.int64)
    return {"ids": [ids[i] for i in start], "hash": record_hashes([ids[i] for i in start], fi[start], ri[start]),
            "file_index": fi[start], "row_index": ri[start], "start": start,
            "tokens": np.array(t["num_tokens"].to_pylist(), np.int64)}


def test_workers_write_each_parts_metadata_and_it_matches_the_part(tmp_path: Path) -> None:
    out = _build(tmp_path, "out")
    parts = _parts(out)
    assert parts and all(meta_path(p).is_file() for p in parts)
    for p in parts:
        assert read_part_meta(p).equals(part_meta(p))
        # the record (the job's "done" marker) names the part whose sidecar is there
        assert json.loads(p.with_suffix(".json").read_text())["part"] == str(p)


def test_source_items_from_sidecars_equal_the_plain_computation(tmp_path: Path) -> None:
    out = _build(tmp_path, "out")
    parts = _parts(out)
    pieces_seen = False
    for source in sorted({p.parent.name for p in parts}):
        mine = [(i, str(p)) for i, p in enumerate(parts) if p.parent.name == source]
        items = load_source_items(source, mine)
        ref = _items_by_hand(mine)
        assert items.rec_ids.to_pylist() == ref["ids"]
        assert np.array_equal(items.rec_hash, ref["hash"])
        assert np.array_equal(items.rec_file_index, ref["file_index"])
        assert np.array_equal(items.rec_row_index, ref["row_index"])
        assert np.array_equal(items.rec_start, ref["start"])
        assert np.array_equal(items.tokens, ref["tokens"])
        pieces_seen |= bool((items.rec_count > 1).any())
        # a part written without a sidecar (an older work folder) gives the same items
        for _, p in mine:
            meta_path(p).unlink()
        again = load_source_items(source, mine)
        assert again.rec_ids.equals(items.rec_ids)
        for field in ("part", "row", "tokens", "loss_tokens", "trimmed", "trimmed_tokens", "piece", "rec_start",
                      "rec_count", "rec_tokens", "rec_hash", "rec_file_index", "rec_row_index"):
            assert np.array_equal(getattr(again, field), getattr(items, field)), field
    assert pieces_seen  # documents longer than the context were split: records != items


def test_resuming_a_work_folder_without_sidecars_writes_the_same_bytes(tmp_path: Path) -> None:
    out = _build(tmp_path, "out")
    before = _digests(out / "p")
    for p in _parts(out):
        meta_path(p).unlink()
    for phase_file in (out / "p").iterdir():
        phase_file.unlink()
    (out / "p").rmdir()
    mix = tmp_path / "mix.yaml"
    assert main(["build", str(mix), "--out", str(out), "--no-ray", "--quiet"]) == 0
    assert not any(meta_path(p).exists() for p in _parts(out))  # the parts were reused, not redone
    assert _digests(out / "p") == before


def test_a_sidecar_that_does_not_describe_its_part_is_not_trusted(tmp_path: Path) -> None:
    # A sidecar from another part (or a part rewritten outside its job) would shift which
    # rows the shard workers take; the driver recomputes the metadata from the part instead.
    out = _build(tmp_path, "out")
    parts = [p for p in _parts(out) if part_meta(p).num_rows > 1]
    a, b = parts[0], parts[1]
    truth = part_meta(a)
    meta_path(a).write_bytes(meta_path(b).read_bytes())  # another part's rows
    assert read_part_meta(a).equals(truth)
    shorter = truth.slice(1)  # the right part's rows, one missing
    with pa.OSFile(str(meta_path(a)), "wb") as sink, pa.ipc.new_file(sink, shorter.schema) as w:
        w.write_table(shorter)
    assert read_part_meta(a).equals(truth)
    other_schema = truth.drop_columns(["hash"])
    with pa.OSFile(str(meta_path(a)), "wb") as sink, pa.ipc.new_file(sink, other_schema.schema) as w:
        w.write_table(other_schema)
    assert read_part_meta(a).equals(truth)
