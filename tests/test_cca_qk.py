"""CCA's fused q/k epilogue (model/kernels/qk_epilogue.py) against the PyTorch composition.

The kernel checks run on a GPU, or on the CPU through Triton's interpreter (TRITON_INTERPRET=1,
set before Triton is imported); without either, one test re-runs this file under the
interpreter in a fresh process, so a plain `pytest` covers the kernel. The interpreter converts
fp32 to bf16/fp16 by truncation, not round-to-nearest as GPUs do, so half-precision results
are only checked against float64 there; the GPU test also compares them with the composition.
"""

from __future__ import annotations

import os

import pytest
import torch

from model.kernels import reference as ref
from torch_checks import rerun_under_interpreter

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_HAS_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if _HAS_GPU else "cpu")
needs_kernel = pytest.mark.skipif(not (_HAS_GPU or _INTERPRET), reason="needs a GPU (or TRITON_INTERPRET=1)")
TOL64 = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}
if _INTERPRET and not _HAS_GPU:
    # The interpreter truncates at each of the ~8 half-precision roundings (a bias toward
    # zero, measured ~1.0% for bf16 against float64); GPUs round to nearest.
    TOL64 = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 4e-3}
# (query heads, key heads, head_dim, rotary half): the 8B config, the tiny config
SHAPES = [(8, 2, 128, 32), (4, 2, 16, 4)]


def _inputs(t: int, hq: int, hk: int, d: int, half: int, dtype: torch.dtype, seed: int):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    c = (hq + hk) * d
    # qk as the engine passes it: a view of the fused projection's output (row stride > C)
    y = torch.randn(t, c + 3 * d, generator=g, device=DEVICE).to(dtype)
    conv = torch.randn(t, c, generator=g, device=DEVICE).to(dtype)
    temp = (torch.rand(hk, generator=g, device=DEVICE) + 0.5).to(dtype)
    positions = torch.randint(0, 40_000, (t,), generator=g, device=DEVICE)
    inv_freq = 1.0 / (10_000.0 ** (torch.arange(half, device=DEVICE, dtype=torch.float32) / half))
    return y[:, :c], conv, temp, positions, inv_freq


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _float64(qk, conv, temp, positions, inv_freq, hq, hk):
    return ref.cca_qk(qk.double(), conv.double(), temp.double(), positions, inv_freq, hq, hk)


def test_supports_only_power_of_two_tiles() -> None:
    from model.kernels.qk_epilogue import supports

    assert supports(8, 2, 128, 32) and supports(4, 2, 16, 4)
    assert not supports(6, 2, 128, 32) and not supports(8, 2, 96, 16) and not supports(8, 2, 128, 128)


@needs_kernel
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES, ids=["8b", "tiny"])
@pytest.mark.parametrize("tokens", [1, 7, 33])
def test_fused_equals_the_composition_and_float64(dtype: torch.dtype, shape: tuple, tokens: int) -> None:
    from model.kernels.qk_epilogue import fused_cca_qk
    from model.kernels.rotary import apply_partial_rotary

    hq, hk, d, half = shape
    args = _inputs(tokens, hq, hk, d, half, dtype, seed=tokens + d)
    q, k = fused_cca_qk(*args, hq, hk)
    assert q.shape == (tokens, hq, d) and k.shape == (tokens, hk, d) and q.dtype == k.dtype == dtype
    assert not (torch.isnan(q).any() or torch.isnan(k).any())
    q64, k64 = _float64(*args, hq, hk)
    assert _rel(q, q64) < TOL64[dtype] and _rel(k, k64) < TOL64[dtype]
    if dtype == torch.float32 or _HAS_GPU:
        cq, ck = ref.cca_qk(*args, hq, hk, rotary=apply_partial_rotary)
        if dtype == torch.float32:
            assert _rel(q, cq) < 1e-6 and _rel(k, ck) < 1e-6
        else:  # same roundings; a different summation order in the norms may move an ulp
            assert (q != cq).float().mean() < 0.02 and (k != ck).float().mean() < 0.02
            assert _rel(q, cq) < 2e-3 and _rel(k, ck) < 2e-3


@needs_kernel
@pytest.mark.gpu
def test_dispatch_follows_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    from model.kernels import qk_epilogue
    from model.kernels.rotary import apply_partial_rotary

    args = _inputs(5, 8, 2, 128, 32, torch.float32, seed=3)
    calls = []
    real = qk_epilogue.fused_cca_qk
    monkeypatch.setattr(qk_epilogue, "fused_cca_qk", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setenv("ZAYA_FUSED_QK", "0")
    q, k = qk_epilogue.cca_qk(*args, 8, 2)
    cq, ck = ref.cca_qk(*args, 8, 2, rotary=apply_partial_rotary)
    assert not calls and torch.equal(q, cq) and torch.equal(k, ck)
    monkeypatch.delenv("ZAYA_FUSED_QK")  # the default since the H200 check: fused
    qk_epilogue.cca_qk(*args, 8, 2)
    assert calls == [1]
    qk_epilogue.cca_qk(*_inputs(5, 6, 2, 128, 32, torch.float32, seed=4), 6, 2)  # 6 heads: composed
    assert calls == [1]


def test_the_kernel_checks_under_the_interpreter() -> None:
    if _HAS_GPU or _INTERPRET:
        pytest.skip("the kernel checks run in this process")
    done = rerun_under_interpreter(__file__, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


@needs_kernel
@pytest.mark.gpu
@pytest.mark.parametrize("fused", ["1", "0"], ids=["fused", "composed"])
def test_keys_go_straight_into_cache_rows(fused: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The decode step passes its K cache and the tokens' page slots: keys land in those rows
    # (nothing else changes) and the queries are the ones of the plain call.
    from model.kernels import qk_epilogue

    monkeypatch.setenv("ZAYA_FUSED_QK", fused)
    hq, hk, d, half = SHAPES[0]
    args = _inputs(6, hq, hk, d, half, torch.float32, seed=11)
    q, k = qk_epilogue.cca_qk(*args, hq, hk)
    cache = torch.randn(20, hk, d, device=DEVICE)
    before = cache.clone()
    rows = torch.tensor([3, 17, 0, 9, 12, 5], device=DEVICE)
    q2, out = qk_epilogue.cca_qk(*args, hq, hk, k_out=cache, out_rows=rows)
    assert out is cache and torch.equal(q2, q)
    assert torch.equal(cache[rows], k)
    untouched = torch.ones(20, dtype=torch.bool, device=DEVICE)
    untouched[rows] = False
    assert torch.equal(cache[untouched], before[untouched])
    with pytest.raises(ValueError, match="one row per token"):
        qk_epilogue.cca_qk(*args, hq, hk, k_out=cache, out_rows=rows[:3])
