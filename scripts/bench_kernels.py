"""Time each ZAYA1 Triton kernel against its PyTorch path and the roofline of the same run.

Usage (on a GPU; see scripts/gpu_kernels.sh):  python scripts/bench_kernels.py --out DIR

First measures the two ceilings on this GPU: HBM bandwidth (a 2 GiB device-to-device copy,
bytes read + written) and the bf16 matrix rate (an 8192^3 torch.matmul on random data).
Then, per case, the fewest bytes the kernel must move and the FLOPs it must do give a floor
time = max(bytes / bandwidth, flops / matmul rate); the table shows the Triton time, the
PyTorch-path time, the speedup, and floor / Triton time ("% roof"). All times are medians of
CUDA-event-timed repetitions (triton.testing.do_bench, which also flushes L2 between runs).
Shapes are the 8B configuration: hidden 2048, Hq=8, Hk=2, head_dim 128, 16 experts of
width 2048, router width 256. Inputs are random, never zeros.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.kernels import (  # noqa: E402
    ResidualScaling,
    add_rms_norm,
    apply_partial_rotary,
    cca_conv_decode,
    cca_decode_attention,
    cca_prefill_attention,
    moe_top1,
    paged_view,
    router_top1,
)
from model.kernels import reference as ref  # noqa: E402

DEV = "cuda"
BF16 = torch.bfloat16
H, HQ, HK, D, E, I, R = 2048, 8, 2, 128, 16, 2048, 256


@dataclass
class Row:
    kernel: str
    shape: str
    triton_us: float
    torch_us: float
    triton_graph_us: float
    torch_graph_us: float
    floor_us: float
    bytes: float
    flops: float
    baseline: str

    @property
    def speedup(self) -> float:
        return self.torch_us / self.triton_us

    @property
    def best_triton_us(self) -> float:
        return self.triton_graph_us if math.isfinite(self.triton_graph_us) else self.triton_us

    @property
    def roof_pct(self) -> float:
        return 100.0 * self.floor_us / self.best_triton_us


def bench(fn: Callable[[], object]) -> float:
    """Median microseconds of fn (CUDA events, warm-up excluded)."""
    return 1000.0 * triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


_FLUSH: torch.Tensor | None = None


def bench_graph(fn: Callable[[], object], reps: int = 40) -> float:
    """Median microseconds of one CUDA-graph replay of fn, with L2 flushed before each replay.

    This is the op's GPU time as a graph-captured decode step sees it: no Python or launch
    overhead, weights and cache cold in L2 (as they are after the other 39 layers ran).
    """
    global _FLUSH
    if _FLUSH is None:
        _FLUSH = torch.empty(64 * 1024 * 1024, dtype=torch.int32, device=DEV)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    times = []
    for _ in range(reps):
        _FLUSH.zero_()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        times.append((start, end))
    torch.cuda.synchronize()
    us = sorted(1000.0 * s.elapsed_time(e) for s, e in times)
    del graph
    return us[len(us) // 2]


def ceilings() -> tuple[float, float]:
    n = 1 << 30  # 2 GiB of bf16
    a = torch.randn(n, device=DEV, dtype=BF16)
    b = torch.empty_like(a)
    t_copy = bench(lambda: b.copy_(a))
    bw = 2 * a.numel() * 2 / (t_copy * 1e-6)
    del a, b
    m = 8192
    x = torch.randn(m, m, device=DEV, dtype=BF16)
    y = torch.randn(m, m, device=DEV, dtype=BF16)
    t_mm = bench(lambda: x @ y)
    rate = 2 * m**3 / (t_mm * 1e-6)
    del x, y
    torch.cuda.empty_cache()
    return bw, rate


def rnd(*shape: int, dtype: torch.dtype = BF16, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape, device=DEV, dtype=torch.float32) * scale).to(dtype)


def sweep() -> None:
    """Time candidate launch parameters for the tuned kernels (graph replays, cold L2).

    The winners are copied by hand into model/kernels/tuning.py with the run's date; this
    mutates the live table only for the duration of the sweep.
    """
    from model.kernels import tuning
    from model.kernels.tuning import KernelConfig as KC

    table = tuning._table_for(tuning.device_name(DEV))
    saved = dict(table)

    def run(kernel: str, cands: list[KC], label: str, fn: Callable[[], object]) -> None:
        for cfg in cands:
            table[kernel] = cfg  # type: ignore[index]
            try:
                us = bench_graph(fn)
            except Exception as exc:  # a config that does not compile or fit is reported, not fatal
                print(f"  sweep {kernel:<18} {label:<14} {cfg}  FAILED {type(exc).__name__}: {str(exc)[:80]}")
                continue
            print(f"  sweep {kernel:<18} {label:<14} bm={cfg.block_m:<4} bn={cfg.block_n:<4} bk={cfg.block_k:<4} "
                  f"w={cfg.num_warps} s={cfg.num_stages}  {us:9.1f} us", flush=True)
        table[kernel] = saved[kernel]  # type: ignore[index]

    L = 16384
    q, k, v = rnd(L, HQ, D), rnd(L, HK, D), rnd(L, HK, D)
    cu = torch.tensor([0, L], device=DEV, dtype=torch.int32)
    run("prefill_attention", [KC(128, 64, 64, 8, 3), KC(128, 128, 64, 8, 3), KC(128, 64, 64, 4, 3),
                              KC(64, 64, 64, 4, 3), KC(128, 128, 64, 8, 2), KC(64, 128, 64, 4, 3)],
        f"L={L}", lambda: cca_prefill_attention(q, k, v, cu, max_seqlen_q=L))
    del q, k, v
    S = 4096
    for b in (1, 64):
        kc, vc = rnd(b, S, HK, D), rnd(b, S, HK, D)
        kp, table_ = paged_view(kc, 64)
        vp, _ = paged_view(vc, 64)
        lens_t = torch.full((b,), S, device=DEV, dtype=torch.int32)
        qd = rnd(b, HQ, D)
        run("decode_attention", [KC(2, 64, 64, 4, 2), KC(1, 64, 64, 4, 2), KC(4, 64, 64, 4, 2), KC(2, 32, 64, 4, 3),
                                 KC(2, 128, 64, 4, 2), KC(8, 64, 64, 4, 3)],
            f"B={b}", lambda: cca_decode_attention(qd, kp, vp, table_, lens_t, max_seq_len=S))
    gu = rnd(E, 2 * I, H, scale=H**-0.5)
    dn = rnd(E, H, I, scale=I**-0.5)
    for t in (1, 256):
        x = rnd(t, H)
        ids = torch.randint(0, E, (t,), device=DEV)
        w = torch.rand(t, device=DEV)
        run("moe_small", [KC(16, 64, 128, 4, 4), KC(16, 128, 128, 4, 4), KC(16, 64, 256, 4, 3), KC(16, 32, 128, 4, 4),
                          KC(32, 64, 128, 4, 4), KC(16, 128, 64, 4, 5)],
            f"T={t}", lambda: moe_top1(x, ids, w, gu, dn))
    x = rnd(8192, H)
    ids = torch.randint(0, E, (8192,), device=DEV)
    w = torch.rand(8192, device=DEV)
    run("moe_large", [KC(128, 128, 64, 8, 3), KC(64, 128, 64, 4, 3), KC(128, 64, 64, 4, 3), KC(128, 256, 64, 8, 3),
                      KC(128, 128, 64, 4, 4), KC(64, 64, 64, 4, 4)],
        "T=8192", lambda: moe_top1(x, ids, w, gu, dn))
    rw = dict(norm_weight=rnd(R) + 1, fc1_weight=rnd(R, R), fc1_bias=rnd(R), fc2_weight=rnd(R, R), fc2_bias=rnd(R),
              out_weight=rnd(E + 1, R))
    bias = torch.zeros(E + 1, device=DEV)
    for t in (1, 256):
        s_ = rnd(t, R)
        run("router", [KC(16, 64, 64, 4, 1), KC(16, 64, 64, 4, 3), KC(16, 64, 32, 4, 3), KC(32, 64, 64, 8, 2),
                       KC(16, 64, 128, 8, 2)],
            f"T={t}", lambda: router_top1(s_, **rw, balancing_biases=bias, eps=1e-5))
    C = (HQ + HK) * D
    dw, db, gw, gb = rnd(C, 1, 2), rnd(C), rnd(C, D, 2), rnd(C)
    for b in (1, 256):
        qk, st = rnd(b, C), rnd(b, C, 2)
        run("conv_decode", [KC(16, 64, 64, 4, 1), KC(16, 64, 64, 8, 1), KC(32, 64, 64, 8, 1), KC(64, 64, 64, 8, 1)],
            f"B={b}", lambda: cca_conv_decode(qk, st, dw, db, gw, gb))
    torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("out/kernels"))
    ap.add_argument("--quick", action="store_true", help="fewer, smaller cases")
    ap.add_argument("--sweep", action="store_true", help="first time candidate launch parameters")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    bw, rate = ceilings()
    print(f"device {torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}")
    print(f"ceilings: copy bandwidth {bw / 1e12:.2f} TB/s, bf16 matmul {rate / 1e12:.0f} TFLOP/s")
    if args.sweep:
        sweep()
    rows: list[Row] = []

    def add(kernel: str, shape: str, tri: Callable[[], object], base: Callable[[], object], nbytes: float,
            flops: float, baseline: str, graph: bool = True, base_graph: bool = True) -> None:
        t_tri = bench(tri)
        t_base = bench(base)
        g_tri = bench_graph(tri) if graph else float("nan")
        g_base = bench_graph(base) if graph and base_graph else float("nan")
        floor = max(nbytes / bw, flops / rate) * 1e6
        row = Row(kernel, shape, t_tri, t_base, g_tri, g_base, floor, nbytes, flops, baseline)
        rows.append(row)
        print(f"  {kernel:<16} {shape:<24} eager triton {t_tri:8.1f} {baseline} {t_base:8.1f} | graph triton "
              f"{g_tri:8.1f} {baseline} {g_base:8.1f} us | floor {floor:7.1f} roof {row.roof_pct:5.1f}%", flush=True)

    # 1. add + RMSNorm with ZAYA's residual affine (bf16 activations, fp32 residual stream)
    for t in (256, 16384):
        x = rnd(t, H)
        res = rnd(t, H, dtype=torch.float32)
        w = rnd(H)
        sc = ResidualScaling(rnd(H), rnd(H), rnd(H), rnd(H))
        add("add_rms_norm", f"T={t} H={H}", lambda: add_rms_norm(x, res, w, 1e-5, sc),
            lambda: ref.add_rms_norm(x, res, w, 1e-5, sc), t * H * (2 + 4 + 4 + 2), 0.0, "torch")

    # 2. partial rotary, in place
    inv_freq = 1.0 / (5e6 ** (torch.arange(0, 64, 2, device=DEV, dtype=torch.float32) / 64))
    for t in (256, 16384):
        q = rnd(t, HQ, D)
        k = rnd(t, HK, D)
        pos = torch.randint(0, 100000, (t,), device=DEV)
        add("rotary", f"T={t}", lambda: apply_partial_rotary(q, k, pos, inv_freq, inplace=True),
            lambda: ref.apply_partial_rotary(q, k, pos, inv_freq), t * (HQ + HK) * 64 * 2 * 2, 0.0, "torch")

    # 3. prefill attention: CCA (Hq=8 over Hk=2) vs SDPA on the same grouped heads, and the
    # issue's comparison: SDPA (flash) multi-head attention of the same hidden size (16 x 128).
    lengths = (4096, 16384) if args.quick else (4096, 16384, 32768)
    for L in lengths:
        q = rnd(L, HQ, D)
        k = rnd(L, HK, D)
        v = rnd(L, HK, D)
        cu = torch.tensor([0, L], device=DEV, dtype=torch.int32)
        qs, ks, vs = (t.transpose(0, 1)[None] for t in (q, k, v))
        flops = 4 * HQ * D * L * (L + 1) / 2
        nbytes = 2 * (2 * L * HQ * D + 2 * L * HK * D)
        tri = lambda: cca_prefill_attention(q, k, v, cu, max_seqlen_q=L)  # noqa: E731
        add("prefill_cca", f"L={L}", tri,
            lambda: F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, enable_gqa=True),
            nbytes, flops, "sdpa-gqa")
        qm = rnd(1, 16, L, D)
        km = rnd(1, 16, L, D)
        vm = rnd(1, 16, L, D)
        add("prefill_cca", f"L={L} vs MHA16", tri,
            lambda: F.scaled_dot_product_attention(qm, km, vm, is_causal=True),
            nbytes, flops, "sdpa-mha")
        del q, k, v, qm, km, vm
    # packed variable-length batch
    g = torch.Generator(device="cpu").manual_seed(1)
    lens = torch.randint(256, 4096, (16,), generator=g).tolist()
    tot = sum(lens)
    q = rnd(tot, HQ, D)
    k = rnd(tot, HK, D)
    v = rnd(tot, HK, D)
    cu = torch.tensor([0] + lens, device=DEV).cumsum(0).to(torch.int32)
    flops = sum(4 * HQ * D * n * (n + 1) / 2 for n in lens)

    def sdpa_loop() -> None:
        for i in range(len(lens)):
            a, b = int(cu[i]), int(cu[i + 1])
            F.scaled_dot_product_attention(q[a:b].transpose(0, 1)[None], k[a:b].transpose(0, 1)[None],
                                           v[a:b].transpose(0, 1)[None], is_causal=True, enable_gqa=True)

    add("prefill_cca", f"varlen 16 seqs T={tot}", lambda: cca_prefill_attention(q, k, v, cu, max_seqlen_q=max(lens)),
        sdpa_loop, 2 * (2 * tot * HQ * D + 2 * tot * HK * D), flops, "sdpa-gqa loop", base_graph=False)

    # 4. decode attention, 4096 cached tokens per sequence, paged view (64-token pages)
    S = 4096
    for b in (1, 64, 256):
        kc = rnd(b, S, HK, D)
        vc = rnd(b, S, HK, D)
        kp, table = paged_view(kc, 64)
        vp, _ = paged_view(vc, 64)
        lens_t = torch.full((b,), S, device=DEV, dtype=torch.int32)
        q = rnd(b, HQ, D)
        ks, vs = kc.transpose(1, 2), vc.transpose(1, 2)
        qs = q[:, :, None]
        nbytes = 2 * b * S * HK * D * 2 + 2 * b * HQ * D * 2
        add("decode_attn", f"B={b} S={S}", lambda: cca_decode_attention(q, kp, vp, table, lens_t, max_seq_len=S),
            lambda: F.scaled_dot_product_attention(qs, ks, vs, enable_gqa=True), nbytes, 4 * b * HQ * S * D, "sdpa-gqa")
        del kc, vc

    # 5. conv state update for decode
    C = (HQ + HK) * D
    dw, db = rnd(C, 1, 2, scale=0.5), rnd(C, scale=0.1)
    gw, gb = rnd(C, D, 2, scale=0.1), rnd(C, scale=0.1)
    for b in (1, 64, 256):
        qk = rnd(b, C)
        st = rnd(b, C, 2)
        nbytes = C * D * 2 * 2 + C * 3 * 2 + b * C * (2 * 2 * 2 + 2 + 2)
        add("conv_decode", f"B={b}", lambda: cca_conv_decode(qk, st, dw, db, gw, gb),
            lambda: ref.cca_conv_decode(qk, st, dw, db, gw, gb), nbytes, 2 * b * C * 2 * D + 4 * b * C, "torch")

    # 6. MoE: top-1 of 16 experts plus the skip class (about 1 token in 17 skips)
    gu = rnd(E, 2 * I, H, scale=H**-0.5)
    dn = rnd(E, H, I, scale=I**-0.5)
    for t in (1, 64, 256, 8192):
        x = rnd(t, H)
        ids = torch.randint(0, E + 1, (t,), device=DEV)
        if t == 1:
            ids[0] = 3
        w = torch.rand(t, device=DEV)
        active = ids[ids < E]
        n_exp = int(torch.unique(active).numel())
        n_tok = int(active.numel())
        nbytes = n_exp * 3 * I * H * 2 + t * H * 2 * 2
        add("moe_top1", f"T={t} ({n_exp} experts)", lambda: moe_top1(x, ids, w, gu, dn),
            lambda: ref.moe_top1(x, ids, w, gu, dn), nbytes, 2 * n_tok * 3 * I * H, "torch loop", base_graph=False)

    # 7. router MLP + softmax + biased top-1
    rw = dict(norm_weight=rnd(R) + 1, fc1_weight=rnd(R, R, scale=R**-0.5), fc1_bias=rnd(R, scale=0.1),
              fc2_weight=rnd(R, R, scale=R**-0.5), fc2_bias=rnd(R, scale=0.1), out_weight=rnd(E + 1, R, scale=R**-0.5))
    bias = torch.zeros(E + 1, device=DEV)
    bias[-1] = -1.0
    for t in (1, 256, 8192):
        s = rnd(t, R)
        nbytes = t * R * 2 + (2 * R * R + (E + 1) * R) * 2 + t * 8
        add("router_top1", f"T={t}", lambda: router_top1(s, **rw, balancing_biases=bias, eps=1e-5),
            lambda: ref.router_top1(s, **rw, balancing_biases=bias, eps=1e-5), nbytes,
            2 * t * (2 * R * R + (E + 1) * R), "torch")

    meta = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "copy_bandwidth_TBps": bw / 1e12,
        "bf16_matmul_TFLOPs": rate / 1e12,
    }
    (args.out / "bench.json").write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=1))
    lines = [
        "| kernel | shape | PyTorch path | eager Triton us | eager PyTorch us | graph Triton us | graph PyTorch us "
        "| speedup (graph, else eager) | floor us | Triton % of roofline |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if math.isfinite(r.triton_graph_us) and math.isfinite(r.torch_graph_us):
            sp = f"{r.torch_graph_us / r.triton_graph_us:.2f}x"
        else:
            sp = f"{r.speedup:.2f}x (eager)"
        lines.append(f"| {r.kernel} | {r.shape} | {r.baseline} | {r.triton_us:.1f} | {r.torch_us:.1f} | "
                     f"{r.triton_graph_us:.1f} | {r.torch_graph_us:.1f} | {sp} | {r.floor_us:.1f} | {r.roof_pct:.0f}% |")
    table = "\n".join(lines)
    (args.out / "bench.md").write_text(table + "\n")
    print()
    print(f"{meta['device']}: copy {bw / 1e12:.2f} TB/s, bf16 matmul {rate / 1e12:.0f} TFLOP/s")
    print(table)
    if not all(math.isfinite(r.triton_us) for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
