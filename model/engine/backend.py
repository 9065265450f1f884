"""Which implementation of the fused ops the engine calls: Triton kernels or their PyTorch references.

`model.kernels` and `model.kernels.reference` expose functions of the same names and contracts,
so the engine has ONE forward pass and picks the module here. "auto" means Triton on a CUDA/ROCm
device and the references elsewhere; "triton" on a CPU only works under TRITON_INTERPRET=1 (the
interpreter, for tests). The one difference in signatures: the Triton decode attention takes
`num_splits` from the caller (so a CUDA graph never syncs to pick it); the reference ignores it.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Callable

import torch

BACKENDS = ("auto", "triton", "torch")


@dataclass(frozen=True)
class Ops:
    """The kernel functions of one backend (see model/kernels/reference.py for the contracts)."""

    name: str
    rms_norm: Callable
    add_rms_norm: Callable
    apply_partial_rotary: Callable
    cca_qk: Callable
    cca_prefill_attention: Callable
    cca_decode_attention: Callable
    cca_conv_decode: Callable
    cca_conv_value_decode: Callable
    linear: Callable
    moe_top1: Callable
    router_top1: Callable
    decode_splits: Callable[[int, int, int, torch.device], int | None]


def _from_module(name: str, mod: ModuleType, splits: Callable[[int, int, int, torch.device], int | None]) -> Ops:
    return Ops(
        name=name,
        rms_norm=mod.rms_norm,
        add_rms_norm=mod.add_rms_norm,
        apply_partial_rotary=mod.apply_partial_rotary,
        cca_qk=mod.cca_qk,
        cca_prefill_attention=mod.cca_prefill_attention,
        cca_decode_attention=mod.cca_decode_attention,
        cca_conv_decode=mod.cca_conv_decode,
        cca_conv_value_decode=mod.cca_conv_value_decode,
        linear=mod.linear,
        moe_top1=mod.moe_top1,
        router_top1=mod.router_top1,
        decode_splits=splits,
    )


def select_ops(backend: str, device: torch.device) -> Ops:
    """The ops for `backend` ("auto", "triton" or "torch") on `device`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: expected one of {BACKENDS}")
    if backend == "auto":
        backend = "triton" if device.type == "cuda" else "torch"
    if backend == "torch":
        from model.kernels import reference

        return _from_module("torch", reference, lambda b, hk, s, dev: None)
    import model.kernels as kernels
    from model.kernels.tuning import is_interpreter

    if device.type != "cuda" and not is_interpreter():
        raise ValueError("backend='triton' needs a CUDA/ROCm device (or TRITON_INTERPRET=1 on the CPU)")
    return _from_module("triton", kernels, kernels.decode_num_splits)
