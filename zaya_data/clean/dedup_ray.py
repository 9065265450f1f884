"""Duplicate resolution on Ray Data: the bucket and verification steps of
`dedup.resolve_duplicates` spread over the cluster, with identical output.

Signatures stay distributed. The signature dataset is executed once into its blocks
(`to_arrow_refs`: Arrow tables in the object store, held by the driver's refs), and block
i becomes block i of the records' *locations* (block << 32 | row). Each block is exploded
into bucket rows (`located_bucket_rows`, one task per block: slot, bucket, key and
location, no signature), the rows are grouped by a hash partition of their bucket key
(`groupby("partition").map_groups`, a shuffle: every row of one bucket meets in one
task), and each partition's buckets become member -> anchor links (`partition_links` ->
`bucket_links`). The reducer verifies its own near candidates: it reads the MinHash of
the partition's candidate records at their locations from the signature blocks (their
refs travel in `fn_kwargs`; `ray.get` of an Arrow block from the local object store maps
it without a copy, and only the candidates' rows are gathered), compares each distinct
(member, anchor) pair of the partition once and returns the exact links and the near
links that reach the threshold, as locations (17 bytes per link). Grouping on a
partition of the band key rather than on each (slot, bucket) pair keeps the per-group
Python overhead out of the millions of singleton buckets.

The driver then needs only the keys of the linked records: one task per block that holds
some (`block_keys`) returns them, and the driver ranks them and runs the union-find
(`resolve_links`), on integer row numbers. The shuffle carries ~60-byte bucket rows
instead of rows that each repeated the record's whole MinHash signature (15 copies of
~450 bytes per record with 14 bands); no signature comes to the driver. A location is
exact (no hash), so nothing is ever re-run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from zaya_data.clean.config import CleanSpec
from zaya_data.clean.dedup import (
    DROPS_SCHEMA,
    block_keys,
    block_rows,
    bucket_keys,
    bucket_links,
    partition_of,
    resolve_links,
    threshold_of,
)


def resolve_duplicates_ray(signatures: Any, spec: CleanSpec, partitions: int | None = None) -> pa.Table:
    """`signatures`: a `ray.data.Dataset` of SIGNATURE_SCHEMA rows. Returns the drop list
    (DROPS_SCHEMA), equal to `resolve_duplicates` on the same rows. `partitions` defaults
    to 4x the cluster's CPUs."""
    import ray
    import ray.data

    if partitions is None:
        partitions = max(1, 4 * int(ray.cluster_resources().get("CPU", 1)))
    blocks = signatures.to_arrow_refs()  # executed once; the blocks live while these refs do
    if not blocks:
        return DROPS_SCHEMA.empty_table()
    rows = ray.remote(located_bucket_rows)
    keyed = ray.data.from_arrow_refs([rows.remote(ref, i, spec, partitions) for i, ref in enumerate(blocks)])
    links = keyed.groupby("partition", num_partitions=partitions).map_groups(
        partition_links, fn_kwargs={"blocks": blocks, "threshold": threshold_of(spec)}, batch_format="pyarrow")
    return resolve_links([ray.get(ref) for ref in links.to_arrow_refs()], lambda loc: _keys_at_blocks(blocks, loc))


def located_bucket_rows(block: pa.Table, index: int, spec: CleanSpec, partitions: int) -> pa.Table:
    """Signature block `index` -> its bucket rows (BUCKET_SCHEMA, locations in block
    `index`) + the hash partition of each: what the shuffle carries."""
    keys = bucket_keys(block, spec, index)
    return keys.append_column("partition", partition_of(keys, partitions))


def partition_links(group: pa.Table, blocks: list[Any], threshold: float) -> pa.Table:
    """All bucket rows of one partition -> its exact links and verified near links
    (LINK_SCHEMA); `blocks`: the refs of the signature blocks, read at the candidates'
    locations."""
    import ray

    return bucket_links(group.drop_columns(["partition"]), lambda i: ray.get(blocks[i]), threshold)


def _keys_at_blocks(blocks: list[Any], locations: np.ndarray) -> pa.Table:
    """The keys of the records at the sorted `locations`, each block's taken where the
    block is (a task per block that holds linked records)."""
    import ray

    take = ray.remote(block_keys)
    return pa.concat_tables(ray.get([take.remote(blocks[b], rows) for b, rows in block_rows(locations)]))
