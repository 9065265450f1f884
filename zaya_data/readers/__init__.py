"""Source readers: a `SourceSpec` -> Arrow batches of its kind's canonical schema.

A source is split into read units (a file, or a chunk of a generator) listed in a
deterministic order; each unit is read independently (one Ray task per unit), emits
batches whose rows carry `file_index` (the unit's index) and `row_index` (line, row or
item number), and counts every record it cannot use in the ledger (stage "read"), so
`input records == emitted rows + read rejections` for every unit.

Formats: jsonl (plain/.gz/.zst/.bz2/.xz), parquet, hf (save_to_disk folders or local
data files), text (one file = one document), reasoning_gym (generated problems). Field
mapping (`spec.fields`, `spec.split`) is in `fieldmap`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from zaya_data.ledger import Ledger
from zaya_data.readers.fieldmap import Mapper
from zaya_data.specs import KINDS, SourceSpec

__all__ = ["ReadUnit", "list_units", "read_unit", "read_source"]


@dataclass(frozen=True)
class ReadUnit:
    """One independently readable piece of a source: a file, or a chunk of a generator."""

    source: str
    file_index: int  # index in the deterministic (sorted) unit list
    path: str  # the file path (or a descriptive name for generated units)
    start: int = 0  # generators: first item index; files: 0
    stop: int | None = None  # generators: one past the last item index; files: None


def _check_spec(spec: SourceSpec) -> None:
    """Errors that would otherwise surface per record: name the source and its origin."""
    if spec.kind not in KINDS:
        raise ValueError(f"source {spec.name!r} ({spec.origin}): unknown kind {spec.kind!r}")
    if not isinstance(spec.options.get("meta", True), bool):
        raise ValueError(f"source {spec.name!r} ({spec.origin}): options.meta must be true or false, "
                         f"got {spec.options['meta']!r}")
    limit = spec.options.get("max_record_bytes", 1)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"source {spec.name!r} ({spec.origin}): options.max_record_bytes must be an integer >= 1, "
                         f"got {limit!r}")
    if spec.format == "text":
        from zaya_data.readers.text import check_text_spec

        check_text_spec(spec)
    else:
        Mapper(spec)  # validates fields, split and the expressions


def _matches(spec: SourceSpec, pattern: str) -> list[str]:
    hits = glob.glob(pattern, recursive=True)
    if spec.format == "hf":
        from zaya_data.readers.hf import is_saved_dataset

        # A save_to_disk folder is one unit; the files inside it are not.
        return [h for h in hits if os.path.isfile(h) or is_saved_dataset(h)]
    return [h for h in hits if os.path.isfile(h)]


def list_units(spec: SourceSpec) -> list[ReadUnit]:
    """The source's read units in a deterministic order: globs expanded (`**` is
    recursive), paths normalised, deduplicated and sorted; reasoning_gym sources are
    split into chunks of `options.chunk` items. A glob matching nothing is an error."""
    _check_spec(spec)
    if spec.format == "reasoning_gym":
        from zaya_data.readers.reasoning_gym import gym_options, unit_ranges

        name = f"reasoning_gym:{gym_options(spec)[0]}"
        return [ReadUnit(spec.name, i, name, start, stop) for i, (start, stop) in enumerate(unit_ranges(spec))]
    if not spec.paths:
        raise ValueError(f"source {spec.name!r} ({spec.origin}): no path given")
    found: set[str] = set()
    for pattern in spec.paths:
        hits = _matches(spec, pattern)
        if not hits:
            what = "no file or save_to_disk folder" if spec.format == "hf" else "no file"
            hint = ""
            if os.path.isdir(pattern) and spec.format != "hf":
                hint = f" (it is a folder: give a glob such as {os.path.join(pattern, '**', '*')!r})"
            raise ValueError(f"source {spec.name!r} ({spec.origin}): path {pattern!r} matches {what}{hint}")
        found.update(os.path.normpath(os.path.abspath(h)) for h in hits)
    return [ReadUnit(spec.name, i, path) for i, path in enumerate(sorted(found))]


def read_unit(spec: SourceSpec, unit: ReadUnit, ledger: Ledger, batch_size: int = 1024) -> Iterator[pa.Table]:
    """Stream the unit's rows as tables of `SCHEMAS[spec.kind]` (at most `batch_size`
    rows each), counting every unusable record in `ledger` (stage "read")."""
    if unit.source != spec.name:
        raise ValueError(f"read unit of source {unit.source!r} given with the spec of source {spec.name!r}")
    fmt = spec.format
    if fmt == "jsonl":
        from zaya_data.readers.jsonl import read_jsonl

        return read_jsonl(spec, unit.path, unit.file_index, ledger, batch_size)
    if fmt == "parquet":
        from zaya_data.readers.parquet import read_parquet

        return read_parquet(spec, unit.path, unit.file_index, ledger, batch_size)
    if fmt == "hf":
        from zaya_data.readers.hf import read_hf

        return read_hf(spec, unit.path, unit.file_index, ledger, batch_size)
    if fmt == "text":
        from zaya_data.readers.text import read_text

        return read_text(spec, unit.path, unit.file_index, ledger, batch_size)
    if fmt == "reasoning_gym":
        from zaya_data.readers.reasoning_gym import read_gym

        return read_gym(spec, unit.path, unit.file_index, unit.start, unit.stop, ledger, batch_size)
    raise ValueError(f"source {spec.name!r} ({spec.origin}): unknown format {fmt!r}")


def read_source(spec: SourceSpec, ledger: Ledger, batch_size: int = 1024) -> Iterator[pa.Table]:
    """Every unit of the source, in `list_units` order."""
    for unit in list_units(spec):
        yield from read_unit(spec, unit, ledger, batch_size)
