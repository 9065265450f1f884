"""Host-to-device copies that do not stall the host.

A copy from ordinary (pageable) host memory goes through a driver staging buffer and can hold
the host until the stream reaches it, i.e. until the GPU has finished the step before; with
decode steps overlapped (see engine.py) that would serialize the host with the device again.
From page-locked memory the copy is truly asynchronous. `Tensor.pin_memory` takes its buffer
from PyTorch's pinned-memory cache, which reuses a block only after the copies that read it
have run, so a buffer is never rewritten under an in-flight copy.
"""

from __future__ import annotations

import torch


def to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`host` (a CPU tensor) on `device`, copied asynchronously on CUDA."""
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


def copy_to_device(dst: torch.Tensor, host: torch.Tensor) -> None:
    """dst.copy_(host) for a device `dst`, asynchronous on CUDA."""
    dst.copy_(host.pin_memory() if dst.is_cuda else host, non_blocking=dst.is_cuda)
