"""The decode linear kernel (model/kernels/decode_linear.py) against float64 and F.linear.

Runs on a GPU, or on the CPU through Triton's interpreter: without either, one test re-runs
this file under the interpreter in a fresh process, so a plain `pytest` covers the kernel
(fp32 and fp16 there: the interpreter's bf16 matrix product is wrong). Both tile forms
(tokens on M, weights on M), with and without bias, whole-K and split-K, on shapes that are
no multiple of any tile.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F

from torch_checks import rerun_under_interpreter

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_HAS_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if _HAS_GPU else "cpu")
needs_kernel = pytest.mark.skipif(not (_HAS_GPU or _INTERPRET), reason="needs a GPU (or TRITON_INTERPRET=1)")
DTYPES = [torch.float32, torch.bfloat16] if _HAS_GPU else [torch.float32, torch.float16]
# relative error against float64; the interpreter truncates half-precision roundings
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 4e-3 if _INTERPRET and not _HAS_GPU else 2e-3}


def _tuning(tmp_path, monkeypatch: pytest.MonkeyPatch, **fields: int) -> None:
    """Both linear regimes take `fields` (through a ZAYA_KERNEL_TUNING file, as a user would)."""
    path = tmp_path / f"linear-{abs(hash(tuple(sorted(fields.items()))))}.json"
    fields = {"vendor_blas": 0, **fields}
    path.write_text(json.dumps({"linear_small": fields, "linear_medium": fields}))
    monkeypatch.setenv("ZAYA_KERNEL_TUNING", str(path))


class _Launches:
    """Counts launches of the Triton kernel (so a silent F.linear fallback cannot pass)."""

    def __init__(self, kernel) -> None:
        self.kernel, self.grids = kernel, []

    def __getitem__(self, grid):
        self.grids.append(grid)
        return self.kernel[grid]


def _rel(out: torch.Tensor, expect: torch.Tensor) -> float:
    return ((out.double() - expect).norm() / expect.norm().clamp_min(1e-30)).item()


def _case(m: int, n: int, k: int, with_bias: bool, dtype: torch.dtype, g: torch.Generator):
    """x [m, k], w [n, k] (scaled to unit outputs), bias [n] or None, and their float64 product."""
    x = torch.randn(m, k, generator=g, device=DEVICE).to(dtype)
    w = (torch.randn(n, k, generator=g, device=DEVICE) * k**-0.5).to(dtype)
    b = torch.randn(n, generator=g, device=DEVICE).to(dtype) if with_bias else None
    return x, w, b, F.linear(x.double(), w.double(), b.double() if b is not None else None)


@needs_kernel
@pytest.mark.gpu
@pytest.mark.parametrize("split_k", [1, 3], ids=["whole-K", "split-K3"])
@pytest.mark.parametrize("swap_ab", [0, 1], ids=["tokens-on-M", "weights-on-M"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_matches_float64_on_odd_shapes(dtype: torch.dtype, swap_ab: int, split_k: int, tmp_path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from model.kernels import decode_linear as lin
    from model.kernels import splitk

    _tuning(tmp_path, monkeypatch, block_m=16, block_n=32, block_k=32, num_warps=4, num_stages=2,
            swap_ab=swap_ab, split_k=split_k)
    # as many SMs as it takes for the split to engage on every shape (on the CPU there is 1)
    monkeypatch.setattr(lin, "multiprocessor_count", lambda index: 10_000)
    launches = _Launches(lin._linear_kernel)
    monkeypatch.setattr(lin, "_linear_kernel", launches)
    g = torch.Generator(device=DEVICE).manual_seed(7 + swap_ab + 10 * split_k)
    for m, n, k, with_bias in ((1, 72, 130, True), (7, 200, 96, False), (37, 50, 161, True), (100, 33, 64, True)):
        x, w, b, expect = _case(m, n, k, with_bias, dtype, g)
        out = lin.linear(x, w, b)
        assert out.shape == (m, n) and out.dtype == dtype
        assert not torch.isnan(out).any(), "NaN: an output element was not written"
        err = _rel(out, expect)
        assert err < TOL[dtype], f"M={m} N={n} K={k}: relative error {err:.2e} >= {TOL[dtype]:.0e}"
        if split_k > 1:
            assert launches.grids[-1][2] == min(split_k, -(-k // 32)), "the split did not engage"
            # slices are summed in split order: the same bits every run; the tickets end at zero
            assert torch.equal(lin.linear(x, w, b), out), "split-K output must be run-to-run identical"
            assert int(splitk.split_counters(out.device, 0).abs().sum()) == 0, "split-K counters must be reset"
    assert len(launches.grids) == (8 if split_k > 1 else 4)


@needs_kernel
@pytest.mark.gpu
@pytest.mark.parametrize("split_k", [1, 3], ids=["whole-K", "split-K3"])
@pytest.mark.parametrize("swap_ab", [0, 1], ids=["tokens-on-M", "weights-on-M"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_weights_through_descriptors(dtype: torch.dtype, swap_ab: int, split_k: int, tmp_path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`tma`: the weight tiles come through a tensor descriptor. N is never a multiple of the
    column tile and one K is not a multiple of the K step: the rows and columns past the matrix
    must read as zero (and the same bits as the pointer path under the interpreter)."""
    from model.kernels import decode_linear as lin
    from model.kernels.tma import TensorDescriptor

    if TensorDescriptor is None:
        pytest.skip("this Triton has no host-side tensor descriptors")
    monkeypatch.setattr(lin, "multiprocessor_count", lambda index: 10_000)
    real, made = lin.matrix_descriptor, []
    monkeypatch.setattr(lin, "matrix_descriptor", lambda t, block: made.append(block) or real(t, block))
    g = torch.Generator(device=DEVICE).manual_seed(11 + swap_ab + 10 * split_k)
    for m, n, k, with_bias in ((1, 72, 128, True), (7, 200, 96, False), (37, 50, 136, True), (100, 33, 64, True)):
        x, w, b, expect = _case(m, n, k, with_bias, dtype, g)
        outs = []
        for tma in (0, 1):
            _tuning(tmp_path, monkeypatch, block_m=16, block_n=32, block_k=32, num_warps=4, num_stages=2,
                    swap_ab=swap_ab, split_k=split_k, tma=tma)
            before = len(made)
            outs.append(lin.linear(x, w, b))
            assert len(made) - before == tma, "the descriptor path must be the one under test"
        err = _rel(outs[1], expect)
        assert not torch.isnan(outs[1]).any() and err < TOL[dtype], f"M={m} N={n} K={k}: relative error {err:.2e}"
        if _INTERPRET:
            assert torch.equal(outs[1], outs[0]), f"M={m} N={n} K={k}: not the pointer path's bits"


@needs_kernel
@pytest.mark.gpu
def test_linear_writes_a_strided_input_and_falls_back_beyond_decode_sizes(tmp_path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from model.kernels import decode_linear as lin

    _tuning(tmp_path, monkeypatch, block_m=16, block_n=32, block_k=32)
    launches = _Launches(lin._linear_kernel)
    monkeypatch.setattr(lin, "_linear_kernel", launches)
    g = torch.Generator(device=DEVICE).manual_seed(3)
    # x as the engine passes it: a view with a row stride larger than its width
    base = torch.randn(9, 80, generator=g, device=DEVICE)
    x, w = base[:, :48], torch.randn(24, 48, generator=g, device=DEVICE)
    out = lin.linear(x, w)
    assert len(launches.grids) == 1
    assert _rel(out, F.linear(x.double(), w.double())) < 1e-5
    big = torch.randn(lin.MAX_ROWS + 1, 48, generator=g, device=DEVICE)
    assert torch.equal(lin.linear(big, w), F.linear(big, w)) and len(launches.grids) == 1
    monkeypatch.setenv("ZAYA_TRITON_LINEAR", "0")  # the benchmark's A/B switch
    assert torch.equal(lin.linear(x, w), F.linear(x, w)) and len(launches.grids) == 1
    monkeypatch.delenv("ZAYA_TRITON_LINEAR")
    _tuning(tmp_path, monkeypatch, vendor_blas=1)  # the table's per-regime choice of cuBLAS
    assert torch.equal(lin.linear(x, w), F.linear(x, w)) and len(launches.grids) == 1
    with pytest.raises(ValueError, match=r"x \(9, 48\) and weight \(24, 40\)"):
        lin.linear(x, w[:, :40])
    with pytest.raises(ValueError, match=r"bias \(23,\)"):
        lin.linear(x, w, torch.zeros(23, device=DEVICE))


def test_split_rule_fills_the_sms_once_at_most() -> None:
    from model.kernels.decode_linear import linear_splits
    from model.kernels.tuning import KernelConfig
    import model.kernels.decode_linear as lin

    cfg = KernelConfig(block_m=64, block_n=64, block_k=128, split_k=8)
    real = lin.multiprocessor_count
    try:
        lin.multiprocessor_count = lambda index: 132
        cpu = torch.device("cpu")
        assert linear_splits(cfg, 16, 2048, cpu) == 8  # router down at batch 256: 4 x 4 tiles
        assert linear_splits(cfg, 32, 2048, cpu) == 4
        assert linear_splits(cfg, 96, 2048, cpu) == 1  # q/k/v at batch 256
        assert linear_splits(cfg, 1, 256, cpu) == 2  # never below one K step per slice
        assert linear_splits(KernelConfig(split_k=1), 1, 4096, cpu) == 1
    finally:
        lin.multiprocessor_count = real


def test_the_kernel_checks_under_the_interpreter() -> None:
    if _HAS_GPU or _INTERPRET:
        pytest.skip("the kernel checks run in this process")
    done = rerun_under_interpreter(__file__, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
