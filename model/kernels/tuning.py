"""Per-device launch parameters (block sizes, warps, pipeline stages) for the ZAYA1 kernels.

Why a table and not autotuning: autotuning compiles and times many variants at first call,
which costs seconds per shape inside a serving process and makes CUDA-graph capture awkward.
A table keyed by device name keeps launches deterministic and lets each entry say where its
numbers came from (measured on which GPU, on which date, or not measured at all).

Lookup: `kernel_config(kernel, device_name)` picks the first table entry whose key is a
substring of the device name (``torch.cuda.get_device_name()``), else ``DEFAULT``.

Overrides: ``ZAYA_KERNEL_TUNING=path.json`` (``{"moe_medium": {"block_m": 64, ...}, ...}``)
replaces fields of the named entries for every device, so a sweep on new hardware (an
MI300X, say; scripts/tune_decode.py writes such a file) takes effect without editing this
module. Unknown kernels or fields in the file are an error, not ignored. Each path is read
once per process (launches look the table up every time); a changed file needs a new path.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from typing import Mapping

import torch


@dataclass(frozen=True)
class KernelConfig:
    """Launch parameters of one kernel on one device.

    Only the fields a kernel uses are read; the others keep their defaults.
    """

    block_m: int = 64
    block_n: int = 64
    block_k: int = 64
    num_warps: int = 4
    num_stages: int = 2
    # MoE only: 1 = the transposed grouped GEMM (weight rows on the MMA's M side; block_m is
    # then the tokens per tile, block_n the weight rows per tile); see model/kernels/moe.py
    swap_ab: int = 0
    # MoE only: K slices per (tile, column) in the decode regimes, reduced in split order by
    # the last slice to finish (more programs when few token tiles; see model/kernels/moe.py)
    split_k: int = 1
    # prefill_attention only: 1 = the grid's fastest axis is the query head (every head's
    # heaviest causal block is scheduled first); 1 = K loaded as [block_n, D] rows and
    # transposed in registers instead of loaded as [D, block_n] (model/kernels/cca_attention.py)
    heads_first: int = 0
    k_rows: int = 0
    # 1 = tiles through tensor descriptors (Hopper's TMA; model/kernels/tma.py): Q/K/V in
    # prefill_attention, the expert weights in moe_*, the weights in linear_*
    tma: int = 0
    # router only: extra programs that each load one slice of the MLP weights and discard it,
    # so the weights come from HBM over that many SMs at once (see model/kernels/router.py)
    l2_warm: int = 0
    # linear_* only: 1 = F.linear (cuBLAS / hipBLASLt) serves this regime better than the Triton
    # kernel (measured where it says so); the other fields are then unused
    vendor_blas: int = 0
    # MoE only: the grid's tile axis has cdiv(T, block_m) + extra_tiles programs, each looping
    # over the tile table; 0 = one program per table entry (cdiv(T, block_m) + classes of them)
    extra_tiles: int = 0


# Per-kernel entries. Keys are used by the launchers in this package:
#   rms_norm            one program per row; block_n caps the chunk of the hidden dimension
#   rotary              one program per token (all heads)
#   prefill_attention   block_m query rows x block_n keys per step (flash-attention tiling)
#   decode_attention    block_n cached tokens per step; block_m = split-K target programs per SM;
#                       block_k = fewest cached tokens one split handles
#   conv_decode         block_m batch rows per program (>= 16 for tl.dot); block_k input
#                       channels of a group per step (capped at the group's width)
#   moe_small           grouped GEMM when few tokens per expert (decode): block_m rows per tile
#   moe_medium          grouped GEMM at decode batches of 64 or more tokens (experts may see
#                       tens to hundreds of rows: larger tiles re-read each expert's weights less)
#   moe_large           grouped GEMM for prefill-sized token counts
#   router              block_m tokens per program; block_k = chunk of the router width;
#                       l2_warm = weight-warming programs (0 = none)
#   linear_small        decode linears (q/k/v, o_proj, router down-projection) below 64 rows;
#                       split_k = the most K slices (a launch fills the SMs once at most)
#   linear_medium       the same from 64 rows (up to model/kernels/decode_linear.py's MAX_ROWS)
DeviceTable = Mapping[str, KernelConfig]

# Measured on an NVIDIA H100 80GB HBM3 on 2026-11-25 with `scripts/bench_kernels.py --sweep`
# (CUDA-graph replays, cold L2; docs/results/kernels-2026-11-25.md). Entries not swept keep
# their first-guess values: rms_norm, rotary. H200 shares the H100's SMs and shared memory,
# so it reuses these (timed on H100 only).
_HOPPER: DeviceTable = {
    "rms_norm": KernelConfig(block_n=8192, num_warps=8),
    "rotary": KernelConfig(num_warps=4),
    # L=16384: 128x128 w8 s3 1063 us; 128x64 w8 s3 1127; 64x64 w4 s3 1085; 128x64 w4 s3 1970.
    # H200 2026-12-03 (scripts/tune_prefill.py, L=4K/16K/32K): heads-first + TMA 141/1113/3977
    # us against the pointer form's 167/1225/4531 (launch path timed); kernel-only, the next
    # run: 76/939/3931 us, the best at 16K (benchmarks/results/prefill-2026-12-03-h200.md).
    "prefill_attention": KernelConfig(block_m=128, block_n=128, num_warps=8, num_stages=3, heads_first=1, tma=1),
    # block_m: split-K target programs per SM; block_k: fewest tokens per split.
    # Split target 1/2/4/8 were within 3% at B=1 and B=64 (S=4096). H100 2026-12-05
    # (scripts/tune_decode.py, B=1..256, S=192..2048): within 1% of the best of 19 candidates.
    "decode_attention": KernelConfig(block_m=2, block_n=64, block_k=128, num_warps=4, num_stages=2),
    # B=1: 4 warps 24.0 us, 8 warps 22.8; B=256: 29.2 vs 34.4; block_m=32 spills (154 us)
    "conv_decode": KernelConfig(block_m=16, block_k=128, num_warps=4, num_stages=1),
    # T=1 / T=256 of 16 experts: 84.0 / 239.8 us, all six candidates within 10%. H200
    # 2026-12-02 22:40 (scripts/tune_decode.py): swapped 16x64x128 w4 s4 sums 238.3 us over
    # the sweep's cases against 247.5 for the unswapped 16x64x256 w4 s3
    # H100 2026-12-05: split-K 2/4/8 of this entry sums 331/364/459 us against its 309 (split 1)
    # H100 2026-12-07: expert weights through TMA descriptors 299.8 us against 302.0; in the engine
    # (with TMA in moe_medium and linear_small too) batch 1 337 -> 349 tok/s, 64 and 256 level
    # (benchmarks/results/decode-2026-12-07-h100.md)
    "moe_small": KernelConfig(block_m=16, block_n=64, block_k=128, num_warps=4, num_stages=4, swap_ab=1, tma=1),
    # H200 2026-12-03 (scripts/tune_decode.py, 28 candidates): the best at T=256 routed over ~5
    # experts within 2% (61.6 us), 123.8 us over 16; the sweep-sum winner (swapped 32x64x128 s4)
    # is 68.4 us on the skewed case and cost 10% of engine decode at batch 256
    # H100 2026-12-05: split-K 2/4 sums 533/623 us against 457 (decode-kernels-2026-12-05-h100.md)
    # H100 2026-12-07: TMA descriptors for the weights 453.6 against 455.5 us (T=256 skewed 71.5 vs
    # 72.0); engine batch 256 level (41.3K either way)
    "moe_medium": KernelConfig(block_m=64, block_n=64, block_k=128, num_warps=4, num_stages=3, tma=1),
    # T=8192: 128x128x64 w8 s3 635 us; 128x64 w4 685; 64x128 w4 802; 128x256 w8 out of shared memory
    "moe_large": KernelConfig(block_m=128, block_n=128, block_k=64, num_warps=8, num_stages=3),
    # H200 2026-12-03 (scripts/tune_decode.py, cold L2, T=1/64/256): chunk 256 w8 s3 with 32 L2
    # warm-up programs 12.8/13.2/13.2 us against chunk 128 w8 s2 without 14.1/14.3/14.4 (the
    # earlier entry; 32 tile/warp/stage candidates swept before it, none faster)
    # H100 2026-12-07: split over the width (4 x 64 columns, 8 warps) 13.0/13.9/14.3 us kernel for
    # kernel; in the engine no gain (batch 256 41.0K against 41.3K unsplit): it stays unsplit
    "router": KernelConfig(block_m=16, block_k=256, num_warps=8, num_stages=3, l2_warm=32),
    # H200 2026-12-05 (scripts/tune_decode.py, 14 candidates each, cold L2; q/k/v, o_proj and the
    # router's down-projection at 1/16 and 64/256 rows): sums 51.4 us (cuBLAS 50.5) and 60.4 us
    # (cuBLAS 52.2), no faster kernel for kernel. In the engine, where the Triton kernel joins
    # the chain of PDL launches (model/kernels/pdl.py) and cuBLAS does not: batch 1 346 tok/s
    # against 325 with cuBLAS, batch 256 44.9K against 46.1K. So Triton below 64 rows, cuBLAS above.
    # H100 2026-12-07: weights through TMA descriptors, 16x64x128 s4: 57.0 us against 58.2 (part of
    # the engine's batch-1 337 -> 349 tok/s above); Triton + TMA at 64/256 rows sums 62.4 us
    # against cuBLAS's 54.0 and costs 2.4% of engine decode at 256, so cuBLAS stays there
    "linear_small": KernelConfig(block_m=16, block_n=64, block_k=128, num_warps=4, num_stages=4, swap_ab=1,
                                 tma=1),
    "linear_medium": KernelConfig(block_m=64, block_n=32, block_k=128, num_warps=4, num_stages=4, split_k=8,
                                  vendor_blas=1),
}

# AMD Instinct MI300X (ROCm): NOT MEASURED. No MI300X was available to this project; these
# values follow the usual ROCm Triton guidance (64-wide wavefronts, so fewer warps; one or two
# pipeline stages since the LDS is smaller than Hopper's shared memory) and must be re-timed
# with scripts/bench_kernels.py on real hardware before they are trusted.
_MI300X: DeviceTable = {
    "rms_norm": KernelConfig(block_n=8192, num_warps=8),
    "rotary": KernelConfig(num_warps=4),
    "prefill_attention": KernelConfig(block_m=128, block_n=64, num_warps=4, num_stages=1),
    "decode_attention": KernelConfig(block_m=2, block_n=64, block_k=256, num_warps=4, num_stages=1),
    "conv_decode": KernelConfig(block_m=16, block_k=128, num_warps=4, num_stages=1),
    "moe_small": KernelConfig(block_m=16, block_n=64, block_k=64, num_warps=4, num_stages=2),
    "moe_medium": KernelConfig(block_m=64, block_n=64, block_k=64, num_warps=4, num_stages=2),
    "moe_large": KernelConfig(block_m=128, block_n=128, block_k=64, num_warps=8, num_stages=2),
    "router": KernelConfig(block_m=16, block_k=64, num_warps=4, num_stages=1),
    # hipBLASLt until a sweep on an MI300X says otherwise (the Triton entries are first guesses)
    "linear_small": KernelConfig(block_m=16, block_n=64, block_k=64, num_warps=4, num_stages=2, swap_ab=1, split_k=4,
                                 vendor_blas=1),
    "linear_medium": KernelConfig(block_m=64, block_n=64, block_k=64, num_warps=4, num_stages=2, split_k=4,
                                  vendor_blas=1),
}

# Anything else (older NVIDIA parts, the CPU interpreter): conservative, small tiles that fit
# the 100 KB shared memory of consumer GPUs.
DEFAULT: DeviceTable = {
    "rms_norm": KernelConfig(block_n=4096, num_warps=8),
    "rotary": KernelConfig(num_warps=4),
    "prefill_attention": KernelConfig(block_m=64, block_n=64, num_warps=4, num_stages=2),
    "decode_attention": KernelConfig(block_m=2, block_n=64, block_k=256, num_warps=4, num_stages=2),
    "conv_decode": KernelConfig(block_m=16, block_k=128, num_warps=4, num_stages=1),
    "moe_small": KernelConfig(block_m=16, block_n=64, block_k=64, num_warps=4, num_stages=2),
    "moe_medium": KernelConfig(block_m=32, block_n=64, block_k=64, num_warps=4, num_stages=2),
    "moe_large": KernelConfig(block_m=64, block_n=64, block_k=64, num_warps=4, num_stages=2),
    "router": KernelConfig(block_m=16, block_k=64, num_warps=4, num_stages=1),
    # the vendor BLAS on unmeasured GPUs (tests reach the Triton kernel through overrides)
    "linear_small": KernelConfig(block_m=16, block_n=64, block_k=64, num_warps=4, num_stages=2, swap_ab=1, split_k=4,
                                 vendor_blas=1),
    "linear_medium": KernelConfig(block_m=32, block_n=64, block_k=64, num_warps=4, num_stages=2, split_k=4,
                                  vendor_blas=1),
}

TABLE: Mapping[str, DeviceTable] = {
    "H100": _HOPPER,
    "H200": _HOPPER,
    "GH200": _HOPPER,
    "MI300X": _MI300X,
}


def device_name(device: torch.device | str | None = None) -> str:
    """The accelerator's marketing name, or 'cpu' for CPU tensors (the Triton interpreter)."""
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        return "cpu"
    index = dev.index if dev is not None and dev.index is not None else torch.cuda.current_device()
    return _cuda_name(index)  # cached: this runs on every launch


@lru_cache(maxsize=None)
def _cuda_name(index: int) -> str:
    return torch.cuda.get_device_name(index)


@lru_cache(maxsize=None)
def _table_for(name: str) -> DeviceTable:
    for key, table in TABLE.items():
        if key in name:
            return table
    return DEFAULT


def kernel_config(kernel: str, device: torch.device | str | None = None) -> KernelConfig:
    """Launch parameters for `kernel` on `device` (see the key list above)."""
    return _resolved(kernel, device_name(device), os.environ.get("ZAYA_KERNEL_TUNING", ""))


@lru_cache(maxsize=None)
def _resolved(kernel: str, name: str, override_path: str) -> KernelConfig:
    """The table entry with the override file's fields applied; cached because every launch
    looks its parameters up."""
    table = _table_for(name)
    if kernel not in table:
        raise KeyError(f"no launch parameters for kernel {kernel!r}; known: {sorted(table)}")
    override = _overrides(override_path).get(kernel)
    return replace(table[kernel], **override) if override else table[kernel]


_FLAGS = frozenset({"swap_ab", "heads_first", "k_rows", "tma", "vendor_blas"})  # the 0/1 fields
_COUNTS = frozenset({"l2_warm", "extra_tiles"})  # fields where 0 means "none"


@lru_cache(maxsize=None)
def _overrides(path: str) -> dict[str, dict[str, int]]:
    if not path:
        return {}
    try:
        data = json.loads(open(path).read())
    except (OSError, ValueError) as e:
        raise ValueError(f"ZAYA_KERNEL_TUNING={path}: cannot read a JSON object ({e})") from e
    known = {f.name for f in fields(KernelConfig)}
    if not isinstance(data, dict):
        raise ValueError(f"ZAYA_KERNEL_TUNING={path}: expected an object of kernel -> fields")
    for kernel, entry in data.items():
        if kernel not in DEFAULT:
            raise ValueError(f"ZAYA_KERNEL_TUNING={path}: unknown kernel {kernel!r}; known: {sorted(DEFAULT)}")
        if not isinstance(entry, dict) or not set(entry) <= known or not all(
                isinstance(v, int) and (v in (0, 1) if k in _FLAGS else v >= 0 if k in _COUNTS else v > 0)
                for k, v in entry.items()):
            raise ValueError(f"ZAYA_KERNEL_TUNING={path}: {kernel!r} must map fields {sorted(known)} "
                             f"to positive integers ({', '.join(sorted(_FLAGS))}: 0 or 1; "
                             f"{', '.join(sorted(_COUNTS))}: 0 or more), got {entry!r}")
    return data


@lru_cache(maxsize=None)
def multiprocessor_count(device_index: int) -> int:
    """Number of SMs (CUs on ROCm); 1 on CPU so split heuristics stay sane."""
    if not torch.cuda.is_available():
        return 1
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def is_interpreter() -> bool:
    """True when Triton runs kernels on the CPU through its interpreter (TRITON_INTERPRET=1)."""
    import os

    return os.environ.get("TRITON_INTERPRET", "0") == "1"
