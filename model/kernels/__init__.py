"""Fused Triton inference kernels for ZAYA1 (Triton + PyTorch only: CUDA and ROCm).

Every kernel is a plain function on tensors; `model.kernels.reference` holds a PyTorch
function of the same name and signature that computes the same thing (the oracle in
tests, the baseline in benchmarks). Launch parameters come from `model.kernels.tuning`.

    from model.kernels import add_rms_norm, apply_partial_rotary, cca_prefill_attention, ...
"""

from .cca_attention import cca_decode_attention, cca_prefill_attention, decode_num_splits
from .cca_conv import cca_conv_decode, cca_conv_value_decode
from .decode_linear import linear
from .qk_epilogue import cca_qk
from .moe import moe_top1, tile_schedule
from .reference import ResidualScaling, paged_view
from .rmsnorm import add_rms_norm, rms_norm
from .rotary import apply_partial_rotary
from .router import router_top1

__all__ = [
    "ResidualScaling",
    "add_rms_norm",
    "apply_partial_rotary",
    "cca_conv_decode",
    "cca_conv_value_decode",
    "cca_decode_attention",
    "cca_prefill_attention",
    "cca_qk",
    "decode_num_splits",
    "linear",
    "moe_top1",
    "paged_view",
    "rms_norm",
    "router_top1",
    "tile_schedule",
]
