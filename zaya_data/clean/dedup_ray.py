"""Duplicate resolution on Ray Data: the bucket step of `dedup.resolve_duplicates`
spread over the cluster, with identical output.

Signatures stay distributed: each signature batch is exploded into bucket rows
(`bucket_keys`, a map), the rows are grouped by a hash partition of their bucket key
(`groupby("partition").map_groups`, a shuffle: every row of one bucket meets in one
task), each partition's buckets become member -> anchor links (`bucket_edges`), and
only the links, one per duplicate and bucket, come back to the driver for union-find.
Grouping on a partition of the band key rather than on each (slot, bucket) pair keeps
the per-group Python overhead out of the millions of singleton buckets.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from zaya_data.clean.config import CleanSpec
from zaya_data.clean.dedup import bucket_edges, bucket_keys, partition_of, resolve_edges, threshold_of


def resolve_duplicates_ray(signatures: Any, spec: CleanSpec, partitions: int | None = None) -> pa.Table:
    """`signatures`: a `ray.data.Dataset` of SIGNATURE_SCHEMA rows. Returns the drop list
    (DROPS_SCHEMA), equal to `resolve_duplicates` on the same rows. `partitions` defaults
    to 4x the cluster's CPUs."""
    import ray

    if partitions is None:
        partitions = max(1, 4 * int(ray.cluster_resources().get("CPU", 1)))
    thr = threshold_of(spec)

    def explode(batch: pa.Table) -> pa.Table:
        keys = bucket_keys(batch, spec)
        if keys.num_rows == 0:
            return _empty_keys()
        return keys.append_column("partition", partition_of(keys, partitions))

    def links(group: pa.Table) -> pa.Table:
        return bucket_edges(group.drop_columns(["partition"]), thr)

    keyed = signatures.map_batches(explode, batch_format="pyarrow", zero_copy_batch=True)
    edges = keyed.groupby("partition", num_partitions=partitions).map_groups(links, batch_format="pyarrow")
    return resolve_edges(ray.get(ref) for ref in edges.to_arrow_refs())


def _empty_keys() -> pa.Table:
    from zaya_data.clean.dedup import KEY_COLUMNS, SIGNATURE_SCHEMA

    fields = [pa.field("slot", pa.int16()), pa.field("bucket", pa.uint64())]
    fields += [SIGNATURE_SCHEMA.field(c) for c in KEY_COLUMNS]
    fields += [SIGNATURE_SCHEMA.field("minhash"), pa.field("partition", pa.int64())]
    return pa.schema(fields).empty_table()
