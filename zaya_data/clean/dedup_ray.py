"""Duplicate resolution on Ray Data: the bucket and verification steps of
`dedup.resolve_duplicates` spread over the cluster, with identical output.

Signatures stay distributed: each signature batch is exploded into bucket rows
(`bucket_keys`, a map: slot, bucket and key, no signature), the rows are grouped by a hash
partition of their bucket key (`groupby("partition").map_groups`, a shuffle: every row of
one bucket meets in one task), and each partition's buckets become member -> anchor links
(`bucket_links`: exact links and near candidates as 64-bit key hashes, each distinct link
of the partition once), which come back to the driver. Grouping on a partition of the
band key rather than on each (slot, bucket) pair keeps the per-group Python overhead out
of the millions of singleton buckets.

The near candidates are then verified without moving every signature: the driver sends
the distinct key hashes of the linked records to a map over the signature blocks
(`semi_join`), which returns only those records' keys and signatures; the driver keeps
the pairs similar enough and runs the union-find, on integer row numbers. The shuffle
thus carries ~50-byte bucket rows instead of rows that each repeated the record's whole
MinHash signature (15 copies of ~450 bytes per record with 14 bands), and what comes
back from it is 17 bytes per link. The signature dataset is read twice (bucket rows,
semi-join), so it is materialized once: smaller than the shuffle it feeds, and the
second read cannot see other rows than the first. On a key hash collision (checked by
the semi-join's keys, probability ~1e-9) the groupby and the semi-join run again with
the next hash seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from zaya_data.clean.config import CleanSpec
from zaya_data.clean.dedup import (
    bucket_keys,
    bucket_links,
    partition_of,
    resolve_candidates,
    semi_join,
    threshold_of,
)


def resolve_duplicates_ray(signatures: Any, spec: CleanSpec, partitions: int | None = None) -> pa.Table:
    """`signatures`: a `ray.data.Dataset` of SIGNATURE_SCHEMA rows. Returns the drop list
    (DROPS_SCHEMA), equal to `resolve_duplicates` on the same rows. `partitions` defaults
    to 4x the cluster's CPUs."""
    import ray

    if partitions is None:
        partitions = max(1, 4 * int(ray.cluster_resources().get("CPU", 1)))
    sigs = signatures.materialize()
    keyed = sigs.map_batches(keyed_bucket_rows, fn_kwargs={"spec": spec, "partitions": partitions},
                             batch_format="pyarrow", zero_copy_batch=True)

    def links_for(seed: int) -> list[pa.Table]:
        links = keyed.groupby("partition", num_partitions=partitions).map_groups(
            partition_links, fn_kwargs={"seed": seed}, batch_format="pyarrow")
        return [ray.get(ref) for ref in links.to_arrow_refs()]

    return resolve_candidates(links_for, lambda wanted, seed: _semi_join_blocks(sigs, wanted, seed),
                              threshold_of(spec))


def keyed_bucket_rows(batch: pa.Table, spec: CleanSpec, partitions: int) -> pa.Table:
    """A signature batch -> its bucket rows (BUCKET_SCHEMA) + the hash partition of each:
    what the shuffle carries."""
    keys = bucket_keys(batch, spec)
    return keys.append_column("partition", partition_of(keys, partitions))


def partition_links(group: pa.Table, seed: int = 0) -> pa.Table:
    """All bucket rows of one partition -> exact links and near candidates (LINK_SCHEMA)."""
    return bucket_links(group.drop_columns(["partition"]), seed)


def _semi_join_blocks(sigs: Any, wanted: np.ndarray, seed: int) -> list[pa.Table]:
    """`semi_join` on every block of the (materialized) signature dataset, where the block
    is; only the matching rows come back. `wanted` travels once, with the map's function
    (Ray puts the map transformer, `fn_kwargs` included, in the object store once)."""
    import ray

    rows = sigs.map_batches(semi_join, fn_kwargs={"wanted": wanted, "seed": seed}, batch_format="pyarrow",
                            batch_size=None, zero_copy_batch=True)
    return [ray.get(ref) for ref in rows.to_arrow_refs()]
