"""Each Triton kernel against a float64 reference on random odd shapes.

Runs on a GPU (CUDA or ROCm). Without one it is skipped, unless TRITON_INTERPRET=1, which
runs the same kernels on the CPU through Triton's interpreter (fp32 and fp16 only there: the
interpreter's bf16 matrix product is wrong). Every check draws fresh random inputs, asserts
no NaN, and compares with ||out - ref|| / ||ref|| against the dtype's bound. Uninitialized
memory is NaN-filled for the whole module, so an output element a kernel forgets to write
fails the NaN check.
"""

from __future__ import annotations

import os

import pytest
import torch

from model.kernels import reference as ref
from model.kernels import (
    ResidualScaling,
    add_rms_norm,
    apply_partial_rotary,
    cca_conv_decode,
    cca_decode_attention,
    cca_prefill_attention,
    moe_top1,
    paged_view,
    rms_norm,
    router_top1,
)
from torch_checks import nan_filled_allocations  # noqa: F401 (autouse fixture)

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_HAS_GPU = torch.cuda.is_available()

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not (_HAS_GPU or _INTERPRET), reason="needs a GPU (or TRITON_INTERPRET=1)"),
]

DEVICE = "cuda" if _HAS_GPU else "cpu"
DTYPES = [torch.float32, torch.bfloat16] if _HAS_GPU else [torch.float32, torch.float16]
TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float16: 2e-3}




def _gen(seed: int) -> torch.Generator:
    g = torch.Generator(device=DEVICE)
    g.manual_seed(seed)
    return g


def _randn(*shape: int, dtype: torch.dtype, g: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape, generator=g, device=DEVICE, dtype=torch.float32) * scale).to(dtype)


def _d(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float64)


def _check(out: torch.Tensor, expect: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    assert out.shape == expect.shape, f"{what}: shape {tuple(out.shape)} != {tuple(expect.shape)}"
    assert not torch.isnan(out).any(), f"{what}: NaN in output (unwritten element or bad math)"
    err = ((_d(out) - _d(expect)).norm() / _d(expect).norm().clamp_min(1e-30)).item()
    assert err < TOL[dtype], f"{what}: relative error {err:.3e} >= {TOL[dtype]:.0e}"


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [2048, 1000, 12289])
def test_rms_norm_matches_float64_on_odd_hidden_sizes(dtype: torch.dtype, hidden: int) -> None:
    g = _gen(hidden)
    for rows in (1, 37):
        x = _randn(rows, hidden, dtype=dtype, g=g, scale=3.0)
        w = _randn(hidden, dtype=dtype, g=g)
        out = rms_norm(x, w, 1e-5)
        assert out.dtype == dtype
        _check(out, ref.rms_norm(_d(x), _d(w), 1e-5), dtype, f"rms_norm rows={rows}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scaled", [False, True])
def test_add_rms_norm_returns_new_fp32_residual_and_its_norm(dtype: torch.dtype, scaled: bool) -> None:
    g = _gen(7 + scaled)
    rows, hidden = 29, 2051
    x = _randn(rows, hidden, dtype=dtype, g=g)
    res = _randn(rows, hidden, dtype=torch.float32, g=g, scale=4.0)
    w = _randn(hidden, dtype=dtype, g=g)
    scaling = None
    scaling64 = None
    if scaled:
        parts = [_randn(hidden, dtype=dtype, g=g) for _ in range(4)]
        scaling = ResidualScaling(*parts)
        scaling64 = ResidualScaling(*[_d(p) for p in parts])
    y, new_res = add_rms_norm(x, res, w, 1e-5, scaling)
    y64, res64 = ref.add_rms_norm(_d(x), _d(res), _d(w), 1e-5, scaling64)
    assert new_res.dtype == torch.float32 and y.dtype == dtype
    _check(new_res, res64, torch.float32, "new residual")
    _check(y, y64, dtype, "normed")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim,rotary_dim", [(128, 64), (96, 32)])
@pytest.mark.parametrize("inplace", [False, True])
def test_partial_rotary_rotates_only_the_leading_slice(dtype: torch.dtype, head_dim: int, rotary_dim: int, inplace: bool) -> None:
    g = _gen(head_dim + inplace)
    t = 45
    q = _randn(t, 8, head_dim, dtype=dtype, g=g)
    k = _randn(t, 2, head_dim, dtype=dtype, g=g)
    pos = torch.randint(0, 131072, (t,), generator=g, device=DEVICE)
    inv_freq = 1.0 / (5_000_000.0 ** (torch.arange(0, rotary_dim, 2, device=DEVICE, dtype=torch.float32) / rotary_dim))
    q64, k64 = ref.apply_partial_rotary(_d(q), _d(k), pos, inv_freq)
    q_in, k_in = q.clone(), k.clone()
    qo, ko = apply_partial_rotary(q_in, k_in, pos, inv_freq, inplace=inplace)
    if inplace:
        assert qo.data_ptr() == q_in.data_ptr() and ko.data_ptr() == k_in.data_ptr()
    else:
        assert torch.equal(q_in, q) and torch.equal(k_in, k), "out-of-place call modified its inputs"
    _check(qo, q64, dtype, "q")
    _check(ko, k64, dtype, "k")
    assert torch.equal(qo[..., rotary_dim:], q[..., rotary_dim:]), "pass-through dims changed"


def _qkv(lens_q: list[int], lens_k: list[int], dtype: torch.dtype, g: torch.Generator, hq: int = 8, hk: int = 2, d: int = 128):
    q = _randn(sum(lens_q), hq, d, dtype=dtype, g=g)
    # Larger logits than unit-variance inputs give, so the softmax is far from uniform.
    k = _randn(sum(lens_k), hk, d, dtype=dtype, g=g, scale=2.0)
    v = _randn(sum(lens_k), hk, d, dtype=dtype, g=g)
    cu_q = torch.tensor([0] + lens_q, device=DEVICE).cumsum(0).to(torch.int32)
    cu_k = torch.tensor([0] + lens_k, device=DEVICE).cumsum(0).to(torch.int32)
    return q, k, v, cu_q, cu_k


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("window", [None, 33])
def test_prefill_attention_packed_varlen_causal(dtype: torch.dtype, window: int | None) -> None:
    g = _gen(11 if window is None else 12)
    lens = [1, 17, 130, 67, 200] if _HAS_GPU else [1, 17, 70, 33]
    q, k, v, cu, _ = _qkv(lens, lens, dtype, g)
    out = cca_prefill_attention(q, k, v, cu, max_seqlen_q=max(lens), sliding_window=window)
    expect = ref.cca_prefill_attention(_d(q), _d(k), _d(v), cu, sliding_window=window)
    _check(out, expect, dtype, f"prefill window={window}")


@pytest.mark.parametrize("variant", [{"heads_first": 0, "k_rows": 0}, {"heads_first": 1}, {"k_rows": 1},
                                     {"heads_first": 1, "k_rows": 1}, {"tma": 1}, {"tma": 1, "heads_first": 1}],
                         ids=["plain", "heads-first", "k-rows", "both", "tma", "tma-heads-first"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_prefill_attention_variants(dtype: torch.dtype, variant: dict[str, int], tmp_path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The grid-order and K-layout variants the prefill sweep times compute the same
    attention (packed, windowed, and after a cached prefix)."""
    import json

    (tmp_path / "t.json").write_text(json.dumps({"prefill_attention": variant}))
    monkeypatch.setenv("ZAYA_KERNEL_TUNING", str(tmp_path / "t.json"))
    g = _gen(17)
    lens = [1, 17, 130, 67, 200] if _HAS_GPU else [1, 17, 70]
    q, k, v, cu, _ = _qkv(lens, lens, dtype, g)
    if variant.get("tma"):
        from model.kernels.cca_attention import _tma_ready
        from model.kernels.tma import TensorDescriptor

        if TensorDescriptor is None:
            pytest.skip("this Triton has no host-side tensor descriptors")
        assert _tma_ready(q, k, v), "the descriptor path must be the one under test"
    for window in (None, 33):
        out = cca_prefill_attention(q, k, v, cu, max_seqlen_q=max(lens), sliding_window=window)
        expect = ref.cca_prefill_attention(_d(q), _d(k), _d(v), cu, sliding_window=window)
        _check(out, expect, dtype, f"prefill {variant} window={window}")
    q, k, v, cu_q, cu_k = _qkv([5, 40, 1], [5, 107, 64], dtype, g)
    out = cca_prefill_attention(q, k, v, cu_q, cu_k)
    _check(out, ref.cca_prefill_attention(_d(q), _d(k), _d(v), cu_q, cu_k), dtype, f"prefill {variant} prefix")


@pytest.mark.parametrize("dtype", DTYPES)
def test_prefill_attention_queries_after_a_cached_prefix(dtype: torch.dtype) -> None:
    g = _gen(13)
    lens_q = [5, 40, 1, 66]
    lens_k = [5, 107, 64, 70]
    q, k, v, cu_q, cu_k = _qkv(lens_q, lens_k, dtype, g)
    out = cca_prefill_attention(q, k, v, cu_q, cu_k, sliding_window=None)
    expect = ref.cca_prefill_attention(_d(q), _d(k), _d(v), cu_q, cu_k)
    _check(out, expect, dtype, "prefill with prefix")


def _paged_cache(lens: list[int], page: int, dtype: torch.dtype, g: torch.Generator, hk: int = 2, d: int = 128):
    """Cache whose pages are scattered in a random order, as a paged allocator leaves them."""
    per_seq = max(-(-n // page) for n in lens) + 1
    n_pages = per_seq * len(lens) + 3
    kc = _randn(n_pages, page, hk, d, dtype=dtype, g=g, scale=2.0)
    vc = _randn(n_pages, page, hk, d, dtype=dtype, g=g)
    perm = torch.randperm(n_pages, generator=g, device=DEVICE)[: per_seq * len(lens)]
    table = perm.view(len(lens), per_seq).to(torch.int32)
    return kc, vc, table


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_splits", [1, 3, None])
@pytest.mark.parametrize("window", [None, 50])
def test_decode_attention_paged_split_k(dtype: torch.dtype, num_splits: int | None, window: int | None) -> None:
    g = _gen(17 + (num_splits or 0))
    lens = [1, 300, 77, 129, 16]
    kc, vc, table = _paged_cache(lens, 16, dtype, g)
    q = _randn(len(lens), 8, 128, dtype=dtype, g=g)
    seq_lens = torch.tensor(lens, device=DEVICE, dtype=torch.int32)
    out = cca_decode_attention(q, kc, vc, table, seq_lens, sliding_window=window, num_splits=num_splits)
    expect = ref.cca_decode_attention(_d(q), _d(kc), _d(vc), table, seq_lens, sliding_window=window)
    _check(out, expect, dtype, f"decode splits={num_splits} window={window}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_attention_on_contiguous_cache_view(dtype: torch.dtype) -> None:
    g = _gen(19)
    b, s = 3, 96
    cache_k = _randn(b, s, 2, 128, dtype=dtype, g=g, scale=2.0)
    cache_v = _randn(b, s, 2, 128, dtype=dtype, g=g)
    kc, table = paged_view(cache_k, 32)
    vc, _ = paged_view(cache_v, 32)
    seq_lens = torch.tensor([96, 33, 5], device=DEVICE, dtype=torch.int32)
    q = _randn(b, 8, 128, dtype=dtype, g=g)
    out = cca_decode_attention(q, kc, vc, table, seq_lens)
    expect = ref.cca_decode_attention(_d(q), _d(kc), _d(vc), table, seq_lens)
    _check(out, expect, dtype, "decode contiguous")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 37])
def test_conv_decode_output_and_state_shift(dtype: torch.dtype, batch: int) -> None:
    g = _gen(23 + batch)
    hq, hk, d = 8, 2, 128
    c = (hq + hk) * d
    qk = _randn(batch, c, dtype=dtype, g=g)
    state = _randn(batch, c, 2, dtype=dtype, g=g)
    dw = _randn(c, 1, 2, dtype=dtype, g=g, scale=0.5)
    db = _randn(c, dtype=dtype, g=g, scale=0.1)
    gw = _randn(c, d, 2, dtype=dtype, g=g, scale=0.1)
    gb = _randn(c, dtype=dtype, g=g, scale=0.1)
    state64 = _d(state)
    expect = ref.cca_conv_decode(_d(qk), state64, _d(dw), _d(db), _d(gw), _d(gb))
    old_last = state[:, :, 1].clone()
    out = cca_conv_decode(qk, state, dw, db, gw, gb)
    _check(out, expect, dtype, "conv out")
    assert torch.equal(state[:, :, 0], old_last), "state slot 0 must hold the old position t-1"
    assert torch.equal(state[:, :, 1], qk), "state slot 1 must hold the new token"


def _moe_inputs(t: int, e: int, h: int, i: int, dtype: torch.dtype, g: torch.Generator):
    x = _randn(t, h, dtype=dtype, g=g)
    gu = _randn(e, 2 * i, h, dtype=dtype, g=g, scale=h**-0.5)
    dn = _randn(e, h, i, dtype=dtype, g=g, scale=i**-0.5)
    ids = torch.randint(0, e + 1, (t,), generator=g, device=DEVICE)  # e = skip class
    ids[: min(t, 3)] = e  # always some skipped tokens
    w = torch.rand(t, generator=g, device=DEVICE) + 0.25
    return x, ids, w, gu, dn


@pytest.mark.parametrize("extra_tiles", [0, 1], ids=["program-per-tile", "looping-programs"])
@pytest.mark.parametrize("split_k", [1, 3], ids=["whole-K", "split-K3"])
@pytest.mark.parametrize("swap_ab", [0, 1], ids=["tokens-on-M", "weights-on-M"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens", [1, 37, 100, 300])  # small, small, medium, large tiles (5 experts)
def test_moe_grouped_gemm_with_skip_class(dtype: torch.dtype, tokens: int, swap_ab: int, split_k: int,
                                          extra_tiles: int, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    # extra_tiles=1: fewer programs than tiles on the tile axis (5 experts + skip give up to
    # 6 partial tiles), so programs loop over the table, the skip class's tiles included
    regimes = ("moe_small", "moe_medium", "moe_large")
    table = {r: {"swap_ab": swap_ab, "split_k": split_k, "extra_tiles": extra_tiles} for r in regimes}
    (tmp_path / "t.json").write_text(json.dumps(table))
    monkeypatch.setenv("ZAYA_KERNEL_TUNING", str(tmp_path / "t.json"))
    from model.kernels import moe, splitk

    launched = []
    for name in ("_gate_up_kernel", "_down_kernel", "_gate_up_swapped_kernel", "_down_swapped_kernel"):
        monkeypatch.setattr(moe, name, _Recorded(getattr(moe, name), name, launched))
    g = _gen(29 + tokens)
    e, h, i = 5, 192, 160
    x, ids, w, gu, dn = _moe_inputs(tokens, e, h, i, dtype, g)
    out = moe_top1(x, ids, w, gu, dn)
    expect = ref.moe_top1(_d(x), ids, _d(w), _d(gu), _d(dn))
    skipped = ids == e
    assert torch.all(out[skipped] == 0), "skipped tokens must have exactly zero output"
    if (~skipped).any():
        _check(out[~skipped], expect[~skipped], dtype, f"moe T={tokens}")
    swapped = ["_gate_up_swapped_kernel", "_down_swapped_kernel"]
    assert launched == (swapped if swap_ab else ["_gate_up_kernel", "_down_kernel"])
    if split_k > 1:
        # The splits are summed in split order by the last arriver: the same bits every run, and
        # the arrival counters are back at zero for the next launch (or the next graph replay).
        assert torch.equal(moe_top1(x, ids, w, gu, dn), out), "split-K output must be run-to-run identical"
        assert int(splitk.split_counters(out.device, 0).abs().sum()) == 0, "split-K counters must be reset"


@pytest.mark.parametrize("split_k", [1, 3], ids=["whole-K", "split-K3"])
@pytest.mark.parametrize("swap_ab", [0, 1], ids=["tokens-on-M", "weights-on-M"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens", [1, 37, 300])
def test_moe_weights_through_descriptors(dtype: torch.dtype, tokens: int, swap_ab: int, split_k: int,
                                         tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`tma`: the expert weights are read through tensor descriptors over [E * rows, K]. The
    odd sizes make a column block cross from gate rows into up rows, from one expert's rows
    into the next one's and past the last expert, and a K step run past K: those reads must
    only reach masked-out outputs or read as zero."""
    import json

    from model.kernels import moe
    from model.kernels.tma import TensorDescriptor

    if TensorDescriptor is None:
        pytest.skip("this Triton has no host-side tensor descriptors")
    g = _gen(71 + tokens)
    e, h, i = 5, 192, 160
    x, ids, w, gu, dn = _moe_inputs(tokens, e, h, i, dtype, g)
    outs = {}
    real = moe.matrix_descriptor
    for tma in (0, 1):
        table = {r: {"swap_ab": swap_ab, "split_k": split_k, "tma": tma} for r in ("moe_small", "moe_medium", "moe_large")}
        (tmp_path / f"t{tma}.json").write_text(json.dumps(table))
        monkeypatch.setenv("ZAYA_KERNEL_TUNING", str(tmp_path / f"t{tma}.json"))
        made = []
        monkeypatch.setattr(moe, "matrix_descriptor", lambda t, block, made=made: made.append(block) or real(t, block))
        outs[tma] = moe_top1(x, ids, w, gu, dn)
        assert len(made) == (2 if tma else 0), "the descriptor path must be the one under test"
    expect = ref.moe_top1(_d(x), ids, _d(w), _d(gu), _d(dn))
    skipped = ids == e
    assert torch.all(outs[1][skipped] == 0), "skipped tokens must have exactly zero output"
    if (~skipped).any():
        _check(outs[1][~skipped], expect[~skipped], dtype, f"moe tma T={tokens}")
    if _INTERPRET:  # same products in the same K order: the same bits as the pointer path
        assert torch.equal(outs[1], outs[0])


class _Recorded:
    """A Triton kernel whose launches are recorded by name (which variant really ran)."""

    def __init__(self, kernel, name: str, log: list[str]) -> None:
        self.kernel, self.name, self.log = kernel, name, log

    def __getitem__(self, grid):
        self.log.append(self.name)
        return self.kernel[grid]


def _router_weights(r: int, classes: int, dtype: torch.dtype, g: torch.Generator):
    return dict(
        norm_weight=_randn(r, dtype=dtype, g=g, scale=0.5) + 1.0,
        fc1_weight=_randn(r, r, dtype=dtype, g=g, scale=r**-0.5),
        fc1_bias=_randn(r, dtype=dtype, g=g, scale=0.1),
        fc2_weight=_randn(r, r, dtype=dtype, g=g, scale=2 * r**-0.5),
        fc2_bias=_randn(r, dtype=dtype, g=g, scale=0.1),
        out_weight=_randn(classes, r, dtype=dtype, g=g, scale=4 * r**-0.5),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens", [1, 29, 300])
def test_router_top1_matches_float64_choice_and_weight(dtype: torch.dtype, tokens: int) -> None:
    g = _gen(31 + tokens)
    r, classes = 256, 17
    s = _randn(tokens, r, dtype=dtype, g=g, scale=2.0)
    wts = _router_weights(r, classes, dtype, g)
    bias = torch.zeros(classes, device=DEVICE)
    bias[:-1] = torch.rand(classes - 1, generator=g, device=DEVICE) * 0.05
    bias[-1] = -1.0
    weight, choice = router_top1(s, **wts, balancing_biases=bias, eps=1e-5)
    w64, c64 = ref.router_top1(_d(s), **{k: _d(v) for k, v in wts.items()}, balancing_biases=_d(bias), eps=1e-5)
    assert choice.dtype == torch.int32 and weight.dtype == torch.float32
    assert not torch.isnan(weight).any()
    # The choice may legitimately differ only where the float64 top-2 margin is within rounding.
    logits64 = _router_margin(_d(s), {k: _d(v) for k, v in wts.items()}, _d(bias))
    clear = logits64 > (0.02 if dtype != torch.float32 else 1e-5)
    assert clear.float().mean() > 0.5, "test inputs give too many near-ties to be informative"
    assert torch.equal(choice[clear], c64[clear])
    same = choice == c64
    _check(weight[same], w64[same], dtype, "router weight")


def _depth_average_case(g: torch.Generator, tokens: int, dtype: torch.dtype) -> tuple:
    """Router inputs with the previous layer's state: s, prev, prev_scale, weights, biases."""
    r, classes = 256, 17
    s = _randn(tokens, r, dtype=dtype, g=g, scale=2.0)
    prev = _randn(tokens, r, dtype=dtype, g=g, scale=2.0)
    scale = _randn(r, dtype=dtype, g=g, scale=0.5) + 1.0
    wts = _router_weights(r, classes, dtype, g)
    bias = torch.zeros(classes, device=DEVICE)
    bias[-1] = -1.0
    return s, prev, scale, wts, bias


@pytest.mark.parametrize("dtype", DTYPES)
def test_router_forms_the_depth_average_in_place(dtype: torch.dtype) -> None:
    # With the previous layer's state, s + prev * scale is formed in the kernel and left in
    # s for the next layer; the choice is that of routing it. PyTorch rounds the product
    # and the sum; the GPU build of the kernel may round differently (a fused multiply-add
    # rounds once; seen on H200 in fp32 and bf16), so the state is held to the error bound
    # of two roundings: one unit in the last place of |s| + |prev * scale|, which is not
    # relative to the (possibly cancelled) sum.
    s, prev, scale, wts, bias = _depth_average_case(_gen(41), 40, dtype)
    expect_s = s + prev * scale
    w_plain, c_plain = router_top1(expect_s.clone(), **wts, balancing_biases=bias, eps=1e-5)
    got = s.clone()
    w, c = router_top1(got, **wts, balancing_biases=bias, eps=1e-5, prev=prev, prev_scale=scale)
    mag = s.double().abs() + (prev.double() * scale.double()).abs()
    err = (got.double() - expect_s.double()).abs()
    assert not got.isnan().any()
    assert (err <= torch.finfo(dtype).eps * mag).all(), f"depth average off by {(err / mag).max().item():.2e} of |s| + |prev*scale|"
    if not torch.equal(got, expect_s):  # a fused multiply-add rounded once: route what was formed
        w_plain, c_plain = router_top1(got.clone(), **wts, balancing_biases=bias, eps=1e-5)
    assert torch.equal(c, c_plain) and torch.equal(w, w_plain)
    ref_s = s.clone()
    ref.router_top1(ref_s, **wts, balancing_biases=bias, eps=1e-5, prev=prev, prev_scale=scale)
    assert torch.equal(ref_s, expect_s)
    with pytest.raises(ValueError, match="prev must be"):
        router_top1(s.clone(), **wts, balancing_biases=bias, eps=1e-5, prev=prev[:3], prev_scale=scale)


def _router_margin(s: torch.Tensor, wts: dict[str, torch.Tensor], bias: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    h = ref.rms_norm(s, wts["norm_weight"], 1e-5)
    h = F.gelu(F.linear(h, wts["fc1_weight"], wts["fc1_bias"]))
    h = F.gelu(F.linear(h, wts["fc2_weight"], wts["fc2_bias"]))
    p = torch.softmax(F.linear(h, wts["out_weight"]), -1) + bias
    top2 = p.topk(2, dim=-1).values
    return top2[:, 0] - top2[:, 1]


@pytest.mark.parametrize("warm", [1, 5, 16])
def test_router_l2_warm_up_programs_leave_the_result_unchanged(warm: int, tmp_path, monkeypatch) -> None:
    # The warm-up programs only load slices of the weights; the token programs are the same
    # code, so weights, choices and the depth-average state are bit-identical with or without.
    import json

    s, prev, scale, wts, bias = _depth_average_case(_gen(43 + warm), 45, DTYPES[0])
    s_plain, s_warm = s.clone(), s.clone()
    results = []
    for n, state in ((0, s_plain), (warm, s_warm)):  # both through a file: an ambient override must not leak in
        path = tmp_path / f"warm-{n}.json"
        path.write_text(json.dumps({"router": {"l2_warm": n}}))
        monkeypatch.setenv("ZAYA_KERNEL_TUNING", str(path))
        results.append(router_top1(state, **wts, balancing_biases=bias, eps=1e-5, prev=prev, prev_scale=scale))
    plain, warmed = results
    assert torch.equal(plain[0], warmed[0]) and torch.equal(plain[1], warmed[1])
    assert torch.equal(s_plain, s_warm)


@pytest.mark.parametrize(("chunk", "split"), [(64, 2), (32, 8), (64, 3)], ids=["2x64", "8x32", "3-of-4-chunks"])
@pytest.mark.parametrize("tokens", [1, 45])
def test_router_split_over_the_width(chunk: int, split: int, tokens: int, tmp_path, monkeypatch) -> None:
    """split_k: fc1's columns / fc2's K cut into slices, one program each, the partials added in
    split order by the last slice. The depth-average state is formed as unsplit (bit for bit),
    the choice is the float64 one away from near-ties, the result is run-to-run identical, and
    the counters are back at zero."""
    import json

    from model.kernels import splitk

    dtype = DTYPES[0]
    s, prev, scale, wts, bias = _depth_average_case(_gen(53 + tokens + split), tokens, dtype)
    s_plain = s.clone()
    plain = router_top1(s_plain, **wts, balancing_biases=bias, eps=1e-5, prev=prev, prev_scale=scale)
    path = tmp_path / f"split-{chunk}-{split}.json"
    path.write_text(json.dumps({"router": {"block_k": chunk, "split_k": split, "l2_warm": 2}}))
    monkeypatch.setenv("ZAYA_KERNEL_TUNING", str(path))
    runs = []
    for _ in range(2):
        s_split = s.clone()
        runs.append((s_split, *router_top1(s_split, **wts, balancing_biases=bias, eps=1e-5, prev=prev,
                                           prev_scale=scale)))
    (s1, w1, c1), (s2, w2, c2) = runs
    assert torch.equal(s1, s_plain), "the depth-average state must be the unsplit one"
    assert torch.equal(w1, w2) and torch.equal(c1, c2) and torch.equal(s1, s2), "split output must be run-to-run identical"
    assert int(splitk.split_counters(s.device, 0).abs().sum()) == 0, "split counters must be reset"
    w64, c64 = ref.router_top1(_d(s_plain), **{k: _d(v) for k, v in wts.items()}, balancing_biases=_d(bias), eps=1e-5)
    clear = _router_margin(_d(s_plain), {k: _d(v) for k, v in wts.items()}, _d(bias)) > (
        0.02 if dtype != torch.float32 else 1e-5)
    assert torch.equal(c1[clear], c64[clear])
    assert torch.equal(c1[clear], plain[1][clear])
    same = c1 == c64
    _check(w1[same], w64[same], dtype, "split router weight")


def test_router_skip_class_gets_zero_weight_when_its_bias_wins() -> None:
    g = _gen(37)
    r, classes, dtype = 256, 17, DTYPES[0]
    s = _randn(19, r, dtype=dtype, g=g)
    wts = _router_weights(r, classes, dtype, g)
    bias = torch.zeros(classes, device=DEVICE)
    bias[-1] = 2.0  # larger than any probability: every token skips
    weight, choice = router_top1(s, **wts, balancing_biases=bias, eps=1e-5)
    assert torch.all(choice == classes - 1)
    assert torch.all(weight == 0)


@pytest.mark.parametrize("tokens", [1, 37, 300, 4000])
@pytest.mark.parametrize("with_skip", [False, True], ids=["experts", "experts+skip"])
def test_moe_schedule_is_a_stable_sort_with_an_exact_tile_table(tokens: int, with_skip: bool) -> None:
    from model.kernels.moe import schedule, tile_schedule

    g = _gen(41 + tokens)
    e, bm = 7, 16
    ids = torch.randint(0, e + 1, (tokens,), generator=g, device=DEVICE)
    w = torch.rand(tokens, generator=g, device=DEVICE)
    tok, sw, blk_e, blk_s, blk_end = schedule(ids, w, e, bm, with_skip)
    order, ref_e, ref_s, ref_end, perm = tile_schedule(ids, e, bm, with_skip)
    classes = e + 1 if with_skip else e
    assert blk_e.shape[0] == min(tokens, -(-tokens // bm) + classes)
    n_active = int((ids < classes).sum())
    assert torch.equal(tok[:n_active].long(), perm[:n_active]), "not the stable sort order"
    assert torch.equal(sw[:n_active], w[perm[:n_active]])
    assert torch.equal(blk_e, ref_e)
    valid = blk_e >= 0
    assert torch.equal(blk_s[valid], ref_s[valid]) and torch.equal(blk_end[valid], ref_end[valid])
    # every active token is covered by exactly one tile of its own expert
    covered = torch.zeros(tokens, dtype=torch.int64, device=DEVICE)
    for b in valid.nonzero()[:, 0].tolist():
        rows = torch.arange(int(blk_s[b]), min(int(blk_s[b]) + bm, int(blk_end[b])), device=DEVICE)
        assert torch.all(ids[tok[rows].long()] == blk_e[b])
        covered[tok[rows].long()] += 1
    assert torch.equal(covered, (ids < classes).long())
