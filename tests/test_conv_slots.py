"""The slot-indexed decode convolution and delayed-value swap (the engine's per-layer state step).

Reference checks run everywhere; the Triton checks need a GPU or TRITON_INTERPRET=1 (set before
Triton is imported, as for tests/test_kernels_gpu.py). Rows use shuffled slots of a larger state
tensor, and padding rows all share the scratch slot (pages.SCRATCH), as in a CUDA-graph batch:
their outputs and the scratch slot are garbage, every other slot must be exactly the reference's
update, and slots no row uses must be untouched.
"""

from __future__ import annotations

import os

import pytest
import torch

from model.engine.pages import SCRATCH
from model.kernels import reference as ref
from torch_checks import nan_filled_allocations  # noqa: F401 (autouse fixture)

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_HAS_GPU = torch.cuda.is_available()
DEVICE = "cuda" if _HAS_GPU else "cpu"
needs_triton = pytest.mark.skipif(not (_HAS_GPU or _INTERPRET), reason="needs a GPU (or TRITON_INTERPRET=1)")
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


@pytest.fixture(autouse=True)
def _strict_fp32_reference():
    """cuDNN convolutions default to TF32 on CUDA (rel. error ~3e-4 in fp32, measured on an
    H200): the reference must be a true fp32 oracle, so TF32 is off in this file."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
DTYPES = [torch.float32, torch.bfloat16] if _HAS_GPU else [torch.float32, torch.float16]




def _case(real: int, pad: int, groups: int, cg: int, width: int, num_slots: int, dtype: torch.dtype, seed: int,
          slot_dtype: torch.dtype = torch.int64):
    """Inputs of one decode step: `real` rows on shuffled distinct slots, then `pad` scratch rows."""
    g = torch.Generator(device=DEVICE).manual_seed(seed)

    def rnd(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g, device=DEVICE) * scale).to(dtype)

    c = groups * cg
    b = real + pad
    perm = torch.randperm(num_slots - 1, generator=g, device=DEVICE) + 1  # never the scratch slot
    slots = torch.cat([perm[:real], torch.full((pad,), SCRATCH, device=DEVICE, dtype=perm.dtype)])
    slots = torch.stack([slots, slots], dim=1).to(slot_dtype)[:, 1]  # a strided view, like a column of inputs
    # Like the runner's q/k/v projection: qk and v are column slices of one wider row.
    y = rnd(b, c + 2 * width + 3)
    qk, v = y[:, :c], y[:, c : c + 2 * width]
    # A state tensor with a padded slot stride (its [C, 2] stays dense, like a cache layer).
    conv_state = rnd(num_slots, c + 5, 2)[:, :c]
    value_state = rnd(num_slots, width)
    weights = (rnd(c, 1, 2, scale=0.5), rnd(c, scale=0.1), rnd(c, cg, 2, scale=cg**-0.5), rnd(c, scale=0.1))
    return qk, v, conv_state, value_state, slots, weights


def _rel(out: torch.Tensor, expect: torch.Tensor) -> float:
    out, expect = out.double(), expect.double()
    return ((out - expect).norm() / expect.norm().clamp_min(1e-30)).item()


def _check_state(after: torch.Tensor, expect: torch.Tensor, before: torch.Tensor, slots: torch.Tensor,
                 real: int) -> None:
    """Real rows' slots equal the reference's update exactly; unused slots are untouched; scratch is finite."""
    used = slots[:real].long()
    assert torch.equal(after[used], expect[used]), "a real slot's state differs from the reference update"
    unused = torch.ones(after.shape[0], dtype=torch.bool, device=after.device)
    unused[used] = False
    unused[SCRATCH] = False
    assert torch.equal(after[unused], before[unused]), "a slot no row uses was written"
    assert torch.isfinite(after[SCRATCH]).all()


# ---- reference contract (CPU) ---------------------------------------------------------------


def test_reference_slot_form_equals_gather_update_scatter() -> None:
    qk, v, conv_state, value_state, slots, w = _case(7, 3, 3, 24, 20, 17, torch.float64, seed=1)
    real = 7
    gathered = conv_state[slots].clone()
    expect = ref.cca_conv_decode(qk, gathered, *w)  # the contiguous form on the gathered copy
    before = conv_state.clone()
    out = ref.cca_conv_decode(qk, conv_state, *w, slots=slots)
    assert torch.equal(out[:real], expect[:real])
    expect_state = before.clone()
    expect_state[slots[:real]] = gathered[:real]
    _check_state(conv_state, expect_state, before, slots, real)


def test_reference_value_step_returns_previous_and_stores_delayed() -> None:
    qk, v, conv_state, value_state, slots, w = _case(5, 2, 2, 16, 12, 9, torch.float64, seed=2)
    real = 5
    before = value_state.clone()
    conv_before = conv_state.clone()
    conv, v_all = ref.cca_conv_value_decode(qk, v, conv_state, value_state, slots, *w)
    assert torch.equal(conv[:real], ref.cca_conv_decode(qk, conv_before.clone(), *w, slots=slots)[:real])
    assert torch.equal(v_all[:real], torch.cat([v[:real, :12], before[slots[:real]]], dim=-1))
    expect = before.clone()
    expect[slots[:real]] = v[:real, 12:]
    _check_state(value_state, expect, before, slots, real)


# ---- Triton kernel vs reference vs float64 --------------------------------------------------


@pytest.mark.gpu
@needs_triton
@pytest.mark.parametrize(("real", "pad", "groups", "cg", "block_b", "block_k"), [
    (1, 0, 3, 24, None, None),
    (5, 4, 3, 24, 16, 8),
    (37, 6, 5, 16, 32, None),
    (19, 13, 2, 40, 16, 16),
    (3, 29, 10, 128, None, 32),  # the 8B config's groups (CG = 128), mostly padding rows
])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("update_state", [True, False])
@pytest.mark.parametrize("slot_dtype", [torch.int64, torch.int32])
def test_conv_decode_with_slots_matches_reference(real: int, pad: int, groups: int, cg: int, block_b: int | None,
                                                  block_k: int | None, dtype: torch.dtype, update_state: bool,
                                                  slot_dtype: torch.dtype) -> None:
    from model.kernels import cca_conv_decode

    qk, _, state, _, slots, w = _case(real, pad, groups, cg, 7, 2 * (real + pad) + 3, dtype, seed=real * 31 + cg,
                                      slot_dtype=slot_dtype)
    before = state.clone()
    expect_state = state.clone()
    expect = ref.cca_conv_decode(qk, expect_state, *w, update_state, slots)
    exact = ref.cca_conv_decode(qk.double(), before.double(), *(t.double() for t in w), False, slots)
    out = cca_conv_decode(qk, state, *w, update_state, slots, block_b=block_b, block_k=block_k)
    assert not torch.isnan(out).any()
    assert _rel(out[:real], exact[:real]) < TOL[dtype], "kernel vs float64"
    assert _rel(expect[:real], exact[:real]) < TOL[dtype], "reference vs float64"
    if update_state:
        _check_state(state, expect_state, before, slots, real)
    else:
        assert torch.equal(state, before), "update_state=False must leave the state alone"


@pytest.mark.gpu
@needs_triton
@pytest.mark.parametrize("block_k", [8, 16, None])
def test_conv_decode_contiguous_form_and_strided_state(block_k: int | None) -> None:
    from model.kernels import cca_conv_decode

    qk, _, _, _, _, w = _case(11, 0, 3, 24, 4, 12, torch.float32, seed=7)
    # slots=None: row b is state b. A state whose [C, 2] is not dense goes through a copy and
    # must still be updated in place.
    for state in (torch.randn(11, 72, 2, device=DEVICE), torch.randn(11, 2, 72, device=DEVICE).transpose(1, 2)):
        expect_state = state.clone()
        expect = ref.cca_conv_decode(qk.double(), expect_state.double(), *(t.double() for t in w))
        out = cca_conv_decode(qk, state, *w, block_k=block_k)
        assert _rel(out, expect) < TOL[torch.float32]
        assert torch.equal(state[:, :, 0], expect_state[:, :, 1]) and torch.equal(state[:, :, 1], qk)


@pytest.mark.gpu
@needs_triton
@pytest.mark.parametrize(("real", "pad", "groups", "cg", "width", "block_b"), [
    (1, 0, 6, 16, 16, None),  # the tiny model's shapes
    (9, 7, 3, 24, 20, 16),
    (33, 2, 10, 128, 128, 32),  # the 8B config's shapes
    (4, 12, 5, 16, 37, None),  # odd value width: columns spread unevenly over the groups
])
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_value_decode_matches_reference(real: int, pad: int, groups: int, cg: int, width: int,
                                             block_b: int | None, dtype: torch.dtype) -> None:
    from model.kernels import cca_conv_value_decode

    qk, v, conv_state, value_state, slots, w = _case(real, pad, groups, cg, width, real + pad + 5, dtype, seed=width)
    conv_before, value_before = conv_state.clone(), value_state.clone()
    conv_expect, value_expect = conv_state.clone(), value_state.clone()
    ref_conv, ref_v = ref.cca_conv_value_decode(qk, v, conv_expect, value_expect, slots, *w)
    exact = ref.cca_conv_decode(qk.double(), conv_before.double(), *(t.double() for t in w), False, slots)
    conv, v_all = cca_conv_value_decode(qk, v, conv_state, value_state, slots, *w, block_b=block_b)
    assert not torch.isnan(conv).any() and not torch.isnan(v_all).any()
    assert _rel(conv[:real], exact[:real]) < TOL[dtype]
    assert _rel(ref_conv[:real], exact[:real]) < TOL[dtype]
    assert torch.equal(v_all[:real], ref_v[:real]), "[v_current | previous] is a copy: exact"
    _check_state(conv_state, conv_expect, conv_before, slots, real)
    _check_state(value_state, value_expect, value_before, slots, real)


@needs_triton
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_value_heads_go_straight_into_cache_rows(dtype: torch.dtype) -> None:
    from model.kernels import cca_conv_value_decode

    real, pad, width = 9, 3, 20
    qk, v, conv_state, value_state, slots, w = _case(real, pad, 3, 24, width, real + pad + 5, dtype, seed=3)
    plain_conv, plain_v = cca_conv_value_decode(qk, v, conv_state.clone(), value_state.clone(), slots, *w)
    ref_conv, ref_v = ref.cca_conv_value_decode(qk, v, conv_state.clone(), value_state.clone(), slots, *w)
    rows = torch.randperm(40, device=DEVICE)[: real + pad]
    for fn in (cca_conv_value_decode, ref.cca_conv_value_decode):
        cache = torch.randn(40, 2 * width, device=DEVICE).to(dtype)
        before = cache.clone()
        conv, out = fn(qk, v, conv_state.clone(), value_state.clone(), slots, *w, v_out=cache, out_rows=rows)
        assert out is cache
        assert torch.equal(cache[rows[:real]], plain_v[:real]) and torch.equal(plain_v[:real], ref_v[:real])
        untouched = torch.ones(40, dtype=torch.bool, device=DEVICE)
        untouched[rows] = False
        assert torch.equal(cache[untouched], before[untouched])
        assert torch.equal(conv[:real], (plain_conv if fn is cca_conv_value_decode else ref_conv)[:real])


# ---- the runner's decode step with CUDA-graph padding rows ----------------------------------


@pytest.mark.gpu
@needs_triton
def test_runner_decode_with_scratch_padding_matches_the_torch_path() -> None:
    from model.engine.backend import select_ops
    from model.engine.graphs import decode_inputs
    from model.engine.pages import PagedCache
    from model.engine.runner import ModelRunner
    from model.tiny import build_tiny

    device = torch.device(DEVICE)
    model = build_tiny().to(device)
    mc = model.config
    g = torch.Generator(device=DEVICE).manual_seed(11)
    caches = [PagedCache(mc, 16, 4, 8, 4, device=device, dtype=model.dtype) for _ in range(2)]
    for name in ("k", "v", "conv", "value"):  # a mid-sequence state in every slot and page
        fill = torch.randn(getattr(caches[0], name).shape, generator=g, device=DEVICE)
        for cache in caches:
            getattr(cache, name).copy_(fill)
    for cache in caches:
        for slot, first in ((5, 1), (2, 5), (6, 9)):
            cache.set_pages(slot, 0, list(range(first, first + 4)))
        cache.flush()
    real = torch.tensor([[7, 40, 99], [3, 6, 13], [5, 2, 6], [4, 7, 14]])  # ids, positions, slots, lengths
    padded = torch.cat([real, torch.tensor([[0], [0], [SCRATCH], [1]]).repeat(1, 3)], dim=1)
    outs = []
    with torch.inference_mode():
        for cache, backend, host in ((caches[0], "triton", padded), (caches[1], "torch", real)):
            ops = select_ops(backend, device)
            runner = ModelRunner(model, cache, ops)
            splits = {lw.sliding_window: ops.decode_splits(host.shape[1], mc.num_key_value_heads, 16, device)
                      for lw in runner.layers}
            outs.append(runner.decode(decode_inputs(host.to(device)), splits)[:3])
    assert _rel(outs[0], outs[1]) < 1e-4
    used = real[2].to(device)
    for name in ("conv", "value"):
        tri, tor = getattr(caches[0], name)[:, used], getattr(caches[1], name)[:, used]
        assert _rel(tri, tor) < 1e-4, f"{name} state of the real slots"
    untouched = torch.tensor([1, 3, 4, 7], device=device)
    assert torch.equal(caches[0].conv[:, untouched], caches[1].conv[:, untouched])
    assert torch.equal(caches[0].value[:, untouched], caches[1].value[:, untouched])
