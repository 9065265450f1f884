"""Programmatic dependent launch (PDL) for the decode kernels: the next kernel starts early.

A decode step is ~500 launches of kernels that each run a few microseconds (a layer is twelve:
projections, conv, q/k, attention, norms, router, MoE), so the gap between one kernel's last
program and the next one's first is a real share of the step. With PDL (Hopper and later) a
kernel launched with the programmatic-serialization attribute may be scheduled while the kernel
before it is still finishing: its programs get their SMs, set up, and wait at `gdc_wait` until
the previous kernel has completed and its writes are visible. `gdc_launch_dependents` right
after lets the kernel after this one do the same.

Correctness rule: `pdl_enter(PDL)` is the first statement of every kernel launched with
`pdl_launch`, before any load or store, so nothing reads a predecessor's output early and
nothing overwrites what a predecessor still reads. (The router's L2 warm-up programs are the
one exception: they only read weights, which no kernel writes.) A predecessor that is not PDL-
aware (a cuBLAS GEMM, a PyTorch op) simply never signals early; the wait then returns when it
completes, as an ordinary launch would.

Off on ROCm (no such mechanism), under the Triton interpreter, before Hopper, and with
ZAYA_PDL=0 in the environment (the A/B switch of the benchmarks).
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch
import triton
import triton.language as tl

from .tuning import is_interpreter

try:  # NVIDIA's grid-dependency control; absent from some Triton builds
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # pragma: no cover - then pdl_enabled() is False and the calls are pruned
    gdc_launch_dependents = gdc_wait = None


@triton.jit
def pdl_enter(PDL: tl.constexpr):
    """Wait for the previous kernel, then let the next one launch (no-op when PDL is off)."""
    if PDL:
        gdc_wait()
        gdc_launch_dependents()


@lru_cache(maxsize=None)
def _supported(index: int) -> bool:
    return (gdc_wait is not None and torch.version.hip is None
            and torch.cuda.get_device_capability(index)[0] >= 9)


def pdl_enabled(device: torch.device) -> bool:
    if device.type != "cuda" or is_interpreter() or os.environ.get("ZAYA_PDL", "1") == "0":
        return False
    return _supported(device.index if device.index is not None else torch.cuda.current_device())


def pdl_launch(device: torch.device) -> dict:
    """Keyword arguments for a launch: the kernel's PDL constexpr and, when on, launch_pdl."""
    return {"PDL": True, "launch_pdl": True} if pdl_enabled(device) else {"PDL": False}
