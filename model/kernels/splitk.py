"""Deterministic split-K for the decode GEMMs (MoE experts, decode linears): the shared parts.

At decode sizes a GEMM has few output tiles (a linear of 256 outputs at batch 256 has 4 x 8
tiles of 64 x 32), so cutting each tile's K loop into `split_k` programs (grid axis 2) puts
more SMs to work. A program adds its K range, takes a ticket from the tile's counter once its
sum is done; the last to arrive (ticket split_k - 1) waits for the others' fp32 partials, adds
all of them in split order (so the bits do not depend on which program came last) and runs
the epilogue; the others publish their partial and leave. Waiting is safe: whoever holds an
earlier ticket is already running and never waits. The last one resets the counters, so they
are zero again for the next launch and for CUDA-graph replays without a memset.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _k_range(k_total, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr):
    """This program's [lo, hi) of the reduction dimension: whole BLOCK_K steps, split pid 2."""
    per = tl.cdiv(tl.cdiv(k_total, BLOCK_K), SPLIT_K) * BLOCK_K
    lo = tl.program_id(2) * per
    return lo, tl.minimum(lo + per, k_total)


@triton.jit
def _arrive(SEM, slot):
    """A ticket for this (tile, column): 0..split_k-1 in the order the K slices finish."""
    return tl.atomic_add(SEM + 2 * slot, 1)


@triton.jit
def _publish(ptrs, acc, mask):
    tl.store(ptrs, acc, mask=mask, cache_modifier=".cg")


@triton.jit
def _release(SEM, slot):
    tl.debug_barrier()  # every thread's partial stores come before the flag
    tl.atomic_add(SEM + 2 * slot + 1, 1, sem="release")


@triton.jit
def _acquire(SEM, slot, SPLIT_K: tl.constexpr):
    """Wait until the split_k - 1 other slices are published, then zero the counters."""
    done = tl.atomic_add(SEM + 2 * slot + 1, 0, sem="acquire")
    while done < SPLIT_K - 1:
        done = tl.atomic_add(SEM + 2 * slot + 1, 0, sem="acquire")
    tl.debug_barrier()
    tl.store(SEM + 2 * slot, 0)
    tl.store(SEM + 2 * slot + 1, 0)


@triton.jit
def _collect(ptrs, split_stride, acc, mask, SPLIT_K: tl.constexpr):
    """Sum of all slices' partials in split order; this program's own slice from registers."""
    # as a tensor of acc's shape: Triton's interpreter rejects a tensor & scalar mask
    me = tl.program_id(2) + tl.zeros(acc.shape, dtype=tl.int32)
    total = tl.zeros_like(acc)
    for s in tl.static_range(SPLIT_K):
        part = tl.load(ptrs + s * split_stride, mask=mask & (me != s), other=0.0, cache_modifier=".cg")
        total += tl.where(me == s, acc, part)
    return total


# Split-K tickets: two int32 counters per (tile, column), zero between launches (the last
# slice of a tile resets its pair). One buffer per device, allocated outside any CUDA-graph
# capture so that it outlives the graphs that use it. The MoE and linear launches of one
# device run on one stream, one after the other (one engine per GPU), and each leaves every
# counter at zero, so they share the buffer without ever holding a counter at the same time.
_SPLIT_SLOTS = 1 << 16
_COUNTERS: dict[torch.device, torch.Tensor] = {}


def split_counters(device: torch.device, slots: int) -> torch.Tensor | None:
    """The device's zeroed counter buffer, or None (run unsplit) when it cannot serve: more
    tiles than slots, or its first use falls inside a graph capture."""
    if slots > _SPLIT_SLOTS:
        return None
    buf = _COUNTERS.get(device)
    if buf is None:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return None
        buf = _COUNTERS[device] = torch.zeros(2 * _SPLIT_SLOTS, dtype=torch.int32, device=device)
    return buf
