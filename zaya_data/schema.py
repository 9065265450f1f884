"""Canonical Arrow schemas: the contracts between stages.

Every reader maps its source onto one of these; every stage names the schema it takes
and the one it returns. Provenance columns (`file_index`, `row_index`) travel with each
record so the ledger, the mixer's tie-breaks and `explain` can name where it came from.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

# Where a record came from: the index of its file in the source's sorted file list and
# its 0-based line (JSONL) or row (Parquet/HF) number in that file.
PROVENANCE = [
    pa.field("file_index", pa.int32(), nullable=False),
    pa.field("row_index", pa.int64(), nullable=False),
]

DOCUMENT = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("meta", pa.string()),  # JSON object as text, or null
        *PROVENANCE,
    ]
)

REASONING = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("reasoning", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("reference_answer", pa.string()),
        pa.field("meta", pa.string()),
        *PROVENANCE,
    ]
)

ROLLOUT = pa.struct(
    [
        pa.field("id", pa.string()),
        pa.field("text", pa.string()),
        pa.field("answer", pa.string()),
    ]
)

ROLLOUT_GROUP = pa.schema(
    [
        pa.field("problem_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("problem", pa.string(), nullable=False),
        pa.field("reference_answer", pa.string()),
        pa.field("rollouts", pa.list_(ROLLOUT), nullable=False),
        pa.field("meta", pa.string()),
        *PROVENANCE,
    ]
)

# Output of format+tokenize+trim: one row per trainable unit (a sample, or one piece of
# a plain document split to the context). `piece` numbers the pieces of one record.
TOKENIZED = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        *PROVENANCE,
        pa.field("piece", pa.int32(), nullable=False),
        pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("loss_mask", pa.list_(pa.uint8()), nullable=False),
        pa.field("num_tokens", pa.int32(), nullable=False),
        pa.field("loss_tokens", pa.int32(), nullable=False),
        pa.field("trimmed", pa.bool_(), nullable=False),
        pa.field("trimmed_tokens", pa.int32(), nullable=False),
    ]
)

SCHEMAS = {"document": DOCUMENT, "reasoning": REASONING, "rollout_group": ROLLOUT_GROUP}


def stable_id(source: str, *content: str) -> str:
    """A record id derived from its source and content: the same record gets the same id
    in every run, on every worker, so dedup, resumption and audits can name it."""
    h = hashlib.blake2b(digest_size=10)
    h.update(source.encode())
    for part in content:
        h.update(b"\x00")
        h.update(part.encode("utf-8", "surrogatepass"))
    return f"{source}:{h.hexdigest()}"
