"""Tensor descriptors (Hopper's tensor memory accelerator) for the kernels that can use them.

A descriptor load is one asynchronous bulk copy of a whole tile into shared memory, issued by
one thread, where a pointer load has every thread compute addresses and issue its own 16-byte
copies; out-of-bounds rows and columns read as zero. The kernels take a descriptor or a
pointer through the same argument, chosen per launch by a tuning-table flag (`tma`).

Host-side descriptors (Triton 3.3+). NVIDIA compute capability 9+ only; the Triton interpreter
emulates them, so the CPU tests run the descriptor code paths too. On ROCm and older GPUs the
pointer path runs.
"""

from __future__ import annotations

from functools import lru_cache

import torch

try:  # Triton 3.3+; with an older one every kernel keeps its pointer path
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover (the pinned Triton has them)
    TensorDescriptor = None


@lru_cache(maxsize=None)
def _has_tma(device_index: int) -> bool:
    """NVIDIA compute capability 9+ (cached: this runs on every launch that may use TMA)."""
    return torch.version.hip is None and torch.cuda.get_device_capability(device_index)[0] >= 9


def tma_device(device: torch.device) -> bool:
    """Whether launches on `device` may use descriptors: a GPU with a TMA unit, or the CPU
    (only the Triton interpreter launches there)."""
    if TensorDescriptor is None:
        return False
    if device.type != "cuda":
        return True
    return _has_tma(device.index if device.index is not None else torch.cuda.current_device())


def tma_addressable(t: torch.Tensor) -> bool:
    """The copy engine's alignment rules: a 16-byte aligned base and row stride, unit inner stride."""
    return (t.stride(-1) == 1 and t.data_ptr() % 16 == 0
            and all((s * t.element_size()) % 16 == 0 for s in t.stride()[:-1]))


def matrix_descriptor(t: torch.Tensor, block: tuple[int, int]):
    """A descriptor that loads `block` tiles of a matrix: a 2-D tensor with unit inner stride,
    or a contiguous stack seen as [prod(leading dims), last dim] (stacked experts' weights
    [E, N, K] as [E * N, K])."""
    if t.dim() == 2:
        shape, strides = list(t.shape), [t.stride(0), 1]
    elif t.is_contiguous():
        shape, strides = [t.numel() // t.shape[-1], t.shape[-1]], [t.shape[-1], 1]
    else:
        raise ValueError(f"a descriptor needs a matrix or a contiguous stack, got strides {t.stride()}")
    return TensorDescriptor(t, shape, strides, list(block))
