"""Plain-text files, one document per file (source code, documentation)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pyarrow as pa

from zaya_data.ledger import Ledger
from zaya_data.readers.rows import RowBuffer, record_limit
from zaya_data.schema import stable_id
from zaya_data.specs import SourceSpec

STAGE = "read"


def check_text_spec(spec: SourceSpec) -> None:
    if spec.kind != "document":
        raise ValueError(
            f"source {spec.name!r} ({spec.origin}): format text reads whole files as documents; "
            f"kind must be 'document', got {spec.kind!r}"
        )
    if spec.fields:
        raise ValueError(
            f"source {spec.name!r} ({spec.origin}): format text has no fields to map, got fields {sorted(spec.fields)}"
        )
    min_chars = spec.options.get("min_chars", 1)
    if not isinstance(min_chars, int) or isinstance(min_chars, bool) or min_chars < 1:
        raise ValueError(f"source {spec.name!r} ({spec.origin}): options.min_chars must be an integer >= 1, got {min_chars!r}")


def read_text(spec: SourceSpec, path: str, file_index: int, ledger: Ledger, batch_size: int) -> Iterator[pa.Table]:
    """One row (row_index 0) for the file, or one rejection: `record_too_large` (over
    options.max_record_bytes), `invalid_utf8` (the file is not UTF-8), `empty_field`
    (empty or whitespace only), `too_short` (fewer than options.min_chars characters),
    `nul_byte` (a binary file)."""
    check_text_spec(spec)
    min_chars: int = spec.options.get("min_chars", 1)
    encoding = str(spec.options.get("encoding", "utf-8"))

    def reject(reason: str, detail: str) -> None:
        ledger.reject(STAGE, reason, spec.name, file=path, detail=detail)

    size, limit = os.path.getsize(path), record_limit(spec.options)
    if size > limit:  # decided from the size: the file is never read into memory
        reject("record_too_large", f"field 'text': {size:,} bytes, options.max_record_bytes is {limit:,}")
        return
    with open(path, "rb") as fh:
        data = fh.read()

    try:
        text = data.decode(encoding, errors="strict")
    except UnicodeDecodeError as e:
        reason = "invalid_utf8" if encoding.replace("-", "").lower() == "utf8" else "invalid_encoding"
        reject(reason, f"field 'text': undecodable byte at offset {e.start}: {e.reason}")
        return
    if not text or text.isspace():
        reject("empty_field", "field 'text': the file is empty")
        return
    if len(text) < min_chars:
        reject("too_short", f"field 'text': {len(text)} characters, options.min_chars is {min_chars}")
        return
    if "\x00" in text:
        reject("nul_byte", "field 'text' contains a NUL byte (a binary file?)")
        return
    buf = RowBuffer("document", spec.name, spec.category, file_index, batch_size)
    buf.add((stable_id(spec.name, text), text, None), 0)
    yield buf.flush()
