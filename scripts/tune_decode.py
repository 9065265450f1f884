"""Sweep launch parameters of the decode-regime kernels on this GPU; write the winners as a
ZAYA_KERNEL_TUNING file (model/kernels/tuning.py) and print a table.

    python scripts/tune_decode.py --out DIR        # then: export ZAYA_KERNEL_TUNING=DIR/tuning.json

Cases (8B shapes: 16 experts of 2048 x 2048 SwiGLU, hidden 2048; 10 conv groups of 128):
  moe_medium   T=64 and T=256 tokens, routed uniformly over 16 experts and skewed over 5
               (what random weights give: ~4.6 experts touched per layer at batch 256); a
               candidate's score is the sum of its times over the four cases; candidates
               include the swapped (weights-on-M) kernels;
  moe_small    T=1, 8 (uniform) and 32 (uniform and skewed), the same way;
  conv_decode  the slot-indexed conv + delayed-value update at B=64 and B=256;
  router       the fused router MLP + top-1 with the depth average (R=256, 17 classes) at
               T=1, T=64 and T=256;
  linear_small / linear_medium  the decode linears (q/k/v 2048 -> 1536, o_proj 1024 -> 2048,
               router down-projection 2048 -> 256 with bias) at 1 and 16 rows / 64 and 256 rows;
               the vendor BLAS (F.linear, `vendor_blas`) is one of the candidates;
  decode_attention  paged CCA decode (8 query heads over 2 K/V heads of 128, pages of 16) at
               B=1 (2,048 cached tokens), B=64 and B=256 (192: the engine benchmark's
               length) and B=256 (1,024: an aggregation prompt); the split count comes from
               the engine's rule (max_model_len), as in a captured decode graph.
Each time is the median of CUDA-graph replays with L2 flushed between them (each layer of a
decode step reads other weights, so the cache is cold). The incumbent (the table's entry) is
always a candidate, so the written file is never worse than the table on these cases.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.kernels.cca_attention import cca_decode_attention, decode_num_splits  # noqa: E402
from model.kernels.cca_conv import cca_conv_value_decode  # noqa: E402
from model.kernels.decode_linear import linear  # noqa: E402
from model.kernels.moe import moe_top1  # noqa: E402
from model.kernels.router import router_top1  # noqa: E402
from model.kernels.tuning import KernelConfig, kernel_config  # noqa: E402

FLUSH = None


def graph_time(fn: Callable[[], Any], reps: int = 15) -> float:
    """Median microseconds of a CUDA-graph replay of fn, L2 flushed before each."""
    global FLUSH
    if FLUSH is None:
        FLUSH = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    fn()  # compile outside the capture
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    times = []
    for _ in range(reps):
        FLUSH.zero_()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1e3)
    return statistics.median(times)


# --with: per regime, the fields a candidate must set to be swept (besides the incumbent);
# key "" applies to the regimes not named
ONLY_FIELDS: dict[str, str] = {}


def sweep(kernel: str, grid: list[KernelConfig], cases: dict[str, Any], run: Callable[[Any], Any],
          out: Path) -> tuple[KernelConfig, list[str]]:
    """Time `run(case)` for every case under every candidate (installed through a
    ZAYA_KERNEL_TUNING file, as a user would); the winner has the smallest summed time."""
    incumbent = kernel_config(kernel, "cuda")
    field = ONLY_FIELDS.get(kernel, ONLY_FIELDS.get("", ""))
    if field:
        default = getattr(KernelConfig(), field)
        grid = [c for c in grid if getattr(c, field) != default]
    lines, best = [], (float("inf"), incumbent)
    for n, cfg in enumerate(dict.fromkeys([incumbent, *grid])):
        # a new file per candidate: tuning.py reads each path once per process
        path = out / f"candidate-{kernel}-{n:02d}.json"
        path.write_text(json.dumps({kernel: asdict(cfg)}))
        os.environ["ZAYA_KERNEL_TUNING"] = str(path)
        try:
            times = {name: graph_time(lambda c=c: run(c)) for name, c in cases.items()}
        except Exception as exc:  # out of shared memory, say: not a candidate
            lines.append(f"{kernel} {cfg}: failed ({type(exc).__name__}: {str(exc)[:80]})")
            continue
        total = sum(times.values())
        lines.append(f"{kernel} m{cfg.block_m} n{cfg.block_n} k{cfg.block_k} w{cfg.num_warps} s{cfg.num_stages}"
                     + (" swap" if cfg.swap_ab else "     ") + (f" warm{cfg.l2_warm}" if cfg.l2_warm else "")
                     + (f" split{cfg.split_k}" if cfg.split_k > 1 else "")
                     + (" vendor-BLAS" if cfg.vendor_blas else "") + (" tma" if cfg.tma else "")
                     + (f" extra{cfg.extra_tiles}" if cfg.extra_tiles else "") + "  "
                     + "  ".join(f"{k} {v:7.1f}" for k, v in times.items()) + f"  sum {total:7.1f} us"
                     + ("  (table)" if cfg == incumbent else ""))
        best = min(best, (total, cfg), key=lambda p: p[0])
    os.environ.pop("ZAYA_KERNEL_TUNING", None)
    return best[1], lines


def _moe_cases(tokens: tuple[int, ...], e: int, h: int, g: torch.Generator) -> dict[str, Any]:
    cases = {}
    for t in tokens:
        x = torch.randn(t, h, device="cuda", dtype=torch.bfloat16, generator=g)
        w = torch.rand(t, device="cuda", generator=g)
        uniform = torch.randint(0, e, (t,), device="cuda", generator=g)
        probs = torch.tensor([0.4, 0.25, 0.15, 0.12, 0.08], device="cuda")
        skewed = torch.multinomial(probs, t, replacement=True, generator=g) * 3
        cases[f"T={t} uniform"] = (x, uniform, w)
        if t >= 16:
            cases[f"T={t} skewed"] = (x, skewed, w)
    return cases


# Candidates per regime. swap_ab=1 puts the weight rows on the MMA's M side (block_m = tokens
# per tile, then as small as 16); swap_ab=0 is the token-rows-on-M layout.
MOE_GRIDS = {
    "moe_small": [KernelConfig(16, 64, 256, 4, 3), KernelConfig(16, 64, 128, 4, 3), KernelConfig(16, 128, 128, 4, 3),
                  KernelConfig(16, 64, 256, 4, 3, swap_ab=1), KernelConfig(16, 128, 128, 4, 3, swap_ab=1),
                  KernelConfig(16, 128, 256, 4, 3, swap_ab=1), KernelConfig(16, 64, 128, 4, 4, swap_ab=1),
                  KernelConfig(16, 128, 128, 8, 3, swap_ab=1), KernelConfig(32, 128, 128, 4, 3, swap_ab=1),
                  # Split-K: at batch 1 a layer has only 32 (gate/up) and 32 (down) weight tiles
                  # to stream, a quarter of the SMs; slicing K puts 2-8x as many programs to work.
                  *(KernelConfig(16, 64, 128, 4, 4, swap_ab=1, split_k=s) for s in (2, 4, 8)),
                  *(KernelConfig(16, 64, 64, 4, 4, swap_ab=1, split_k=s) for s in (4, 8)),
                  *(KernelConfig(16, 128, 128, 4, 3, swap_ab=1, split_k=s) for s in (2, 4))],
    "moe_medium": [KernelConfig(32, 64, 128, 4, 3), KernelConfig(64, 64, 128, 4, 3), KernelConfig(64, 64, 64, 4, 4),
                   KernelConfig(16, 64, 128, 4, 3, swap_ab=1), KernelConfig(16, 128, 128, 4, 3, swap_ab=1),
                   KernelConfig(32, 64, 128, 4, 3, swap_ab=1), KernelConfig(32, 128, 128, 4, 3, swap_ab=1),
                   KernelConfig(32, 128, 64, 4, 4, swap_ab=1), KernelConfig(32, 128, 128, 8, 3, swap_ab=1),
                   KernelConfig(64, 128, 64, 4, 3, swap_ab=1), KernelConfig(64, 128, 128, 8, 3, swap_ab=1),
                   KernelConfig(16, 128, 256, 4, 3, swap_ab=1), KernelConfig(32, 64, 256, 4, 3, swap_ab=1),
                   # Smaller weight tiles per program: at batch 256 over ~5 experts the 64-wide
                   # tiles make ~224 programs of 512 KB each, 1.7 waves on 132 SMs (the second
                   # wave 70% full); narrower tiles cut the last wave's idle share.
                   KernelConfig(64, 32, 128, 4, 3), KernelConfig(64, 32, 256, 4, 3), KernelConfig(64, 16, 256, 4, 4),
                   KernelConfig(128, 32, 128, 4, 3), KernelConfig(128, 64, 128, 8, 3),
                   KernelConfig(64, 64, 128, 4, 3, swap_ab=1), KernelConfig(128, 64, 128, 8, 3, swap_ab=1),
                   KernelConfig(64, 64, 256, 4, 3, swap_ab=1), KernelConfig(32, 64, 128, 4, 4, swap_ab=1),
                   # Deeper pipelines: more weight bytes in flight per SM, for the partly filled
                   # last wave (its SMs could each pull more than an even share of the bandwidth)
                   KernelConfig(64, 64, 64, 4, 6), KernelConfig(64, 64, 128, 4, 4), KernelConfig(64, 64, 64, 8, 6),
                   KernelConfig(32, 64, 128, 4, 5, swap_ab=1), KernelConfig(32, 64, 64, 4, 8, swap_ab=1),
                   KernelConfig(64, 64, 128, 8, 4, swap_ab=1),
                   # Split-K: ~192 programs over ~4.5 experts leave SMs idle in the last wave
                   # and each tile's K loop long; slices shorten it and fill the machine.
                   *(KernelConfig(64, 64, 128, 4, 3, split_k=s) for s in (2, 4)),
                   KernelConfig(64, 64, 64, 4, 4, split_k=2), KernelConfig(64, 128, 128, 8, 3, split_k=2),
                   *(KernelConfig(32, 64, 128, 4, 4, swap_ab=1, split_k=s) for s in (2, 4)),
                   # Looping programs: the tile table has cdiv(T, 64) + 17 entries (21 at T=256),
                   # ~6 used when ~5 experts are routed; the unused ones are empty programs
                   *(KernelConfig(64, 64, 128, 4, 3, extra_tiles=x) for x in (2, 4, 8)),
                   *(KernelConfig(64, 64, 64, 4, 4, extra_tiles=x) for x in (4, 8))],
}
MOE_GRIDS["moe_small"] += [KernelConfig(16, 64, 128, 4, 4, swap_ab=1, extra_tiles=x) for x in (1, 2, 4)]
# Weights through tensor descriptors (TMA): one bulk copy per weight tile instead of every
# thread's 16-byte copies, so a program keeps more of its stream in flight with fewer
# registers and instructions; split-K again beside them (more programs may pay off once each
# pulls faster). --with tma sweeps just these against the table's entry.
MOE_GRIDS["moe_small"] += [
    KernelConfig(16, 64, 128, 4, 4, swap_ab=1, tma=1), KernelConfig(16, 64, 256, 4, 3, swap_ab=1, tma=1),
    KernelConfig(16, 128, 128, 4, 3, swap_ab=1, tma=1), KernelConfig(16, 64, 64, 4, 6, swap_ab=1, tma=1),
    KernelConfig(16, 64, 128, 4, 4, tma=1), KernelConfig(32, 64, 128, 4, 4, swap_ab=1, tma=1),
    *(KernelConfig(16, 64, 128, 4, 4, swap_ab=1, split_k=sp, tma=1) for sp in (2, 4))]
MOE_GRIDS["moe_medium"] += [
    KernelConfig(64, 64, 128, 4, 3, tma=1), KernelConfig(64, 64, 64, 4, 4, tma=1), KernelConfig(64, 64, 64, 4, 6, tma=1),
    KernelConfig(64, 32, 128, 4, 4, tma=1), KernelConfig(128, 64, 64, 8, 3, tma=1), KernelConfig(64, 128, 64, 4, 3, tma=1),
    KernelConfig(32, 64, 128, 4, 4, swap_ab=1, tma=1), KernelConfig(32, 128, 128, 8, 3, swap_ab=1, tma=1),
    KernelConfig(16, 64, 128, 4, 4, swap_ab=1, tma=1), KernelConfig(64, 64, 128, 4, 3, split_k=2, tma=1)]
MOE_TOKENS = {"moe_small": (1, 8, 32), "moe_medium": (64, 256)}


def tune_moe(out: Path, regime: str) -> tuple[KernelConfig, list[str]]:
    """Sweep one MoE regime: T tokens routed uniformly over 16 experts, and skewed over 5 (what
    random weights give: ~4.6 experts touched per layer at batch 256)."""
    e, h, i = 16, 2048, 2048
    g = torch.Generator(device="cuda").manual_seed(0)
    gate_up = torch.randn(e, 2 * i, h, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02
    down = torch.randn(e, h, i, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02
    cases = _moe_cases(MOE_TOKENS[regime], e, h, g)
    return sweep(regime, MOE_GRIDS[regime], cases, lambda c: moe_top1(c[0], c[1], c[2], gate_up, down), out)


def tune_conv(out: Path) -> tuple[KernelConfig, list[str]]:
    c, cg, width, slots_n = 1280, 128, 256, 300
    g = torch.Generator(device="cuda").manual_seed(1)
    dw = torch.randn(c, 1, 2, device="cuda", dtype=torch.bfloat16, generator=g)
    db = torch.randn(c, device="cuda", dtype=torch.bfloat16, generator=g)
    gw = torch.randn(c, cg, 2, device="cuda", dtype=torch.bfloat16, generator=g) * 0.05
    gb = torch.randn(c, device="cuda", dtype=torch.bfloat16, generator=g)
    conv_state = torch.randn(slots_n, c, 2, device="cuda", dtype=torch.bfloat16, generator=g)
    value_state = torch.randn(slots_n, width, device="cuda", dtype=torch.bfloat16, generator=g)
    cases = {}
    for b in (64, 256):
        qk = torch.randn(b, c, device="cuda", dtype=torch.bfloat16, generator=g)
        v = torch.randn(b, 2 * width, device="cuda", dtype=torch.bfloat16, generator=g)
        slots = torch.randperm(slots_n, device="cuda", generator=g)[:b]
        cases[f"B={b}"] = (qk, v, slots)
    grid = [KernelConfig(block_m=bb, block_k=bk, num_warps=w, num_stages=1)
            for bb in (16, 32, 64) for bk in (32, 64, 128) for w in (4, 8)]
    return sweep("conv_decode", grid, cases,
                 lambda x: cca_conv_value_decode(x[0], x[1], conv_state, value_state, x[2], dw, db, gw, gb), out)


def tune_router(out: Path) -> tuple[KernelConfig, list[str]]:
    r, classes = 256, 17
    g = torch.Generator(device="cuda").manual_seed(2)

    def w(*shape: int, scale: float = 0.06) -> torch.Tensor:
        return torch.randn(*shape, device="cuda", dtype=torch.bfloat16, generator=g) * scale

    weights = (w(r, scale=1.0), w(r, r), w(r), w(r, r), w(r), w(classes, r), w(classes, scale=0.01))
    prev_scale = w(r, scale=0.5)
    cases = {f"T={t}": (w(t, r, scale=1.0), w(t, r, scale=1.0)) for t in (1, 64, 256)}
    # Tiles and warps were swept on 2026-12-03 (the table's 16/128/8/2 won); what is left is the
    # number of L2 warm-up programs, with the two runners-up beside the table's tiles.
    grid = [KernelConfig(block_m=16, block_k=bk, num_warps=8, num_stages=st, l2_warm=warm)
            for bk, st in ((128, 2), (256, 3), (64, 3)) for warm in (0, 4, 8, 16, 32, 64)]
    # Split over the router width (split_k slices of block_k columns, one program each): the
    # chain of dependent loads in one program is what the router's time is made of
    grid += [KernelConfig(block_m=16, block_k=bk, num_warps=w, num_stages=2, split_k=sp, l2_warm=warm)
             for bk, sp in ((64, 2), (64, 4), (32, 4), (32, 8)) for w in (4, 8) for warm in (0, 16)]
    return sweep("router", grid, cases,
                 lambda c: router_top1(c[0], *weights, 1e-5, prev=c[1], prev_scale=prev_scale), out)


# (role, N, K, bias): the 8B decode linears
LINEAR_SHAPES = (("qkv", 1536, 2048, False), ("o_proj", 2048, 1024, False), ("router", 256, 2048, True))
LINEAR_ROWS = {"linear_small": (1, 16), "linear_medium": (64, 256)}
LINEAR_GRIDS = {
    # weights on M (swap) with 16 tokens per tile; split-K up to 4-16 slices (capped per launch
    # at what fills the SMs once)
    "linear_small": [*(KernelConfig(16, 64, bk, 4, st, swap_ab=1, split_k=sp)
                       for bk, st in ((128, 4), (256, 3)) for sp in (1, 4, 8, 16)),
                     KernelConfig(16, 128, 128, 4, 3, swap_ab=1, split_k=8),
                     KernelConfig(16, 128, 128, 8, 3, swap_ab=1, split_k=8),
                     KernelConfig(16, 32, 128, 4, 4, swap_ab=1, split_k=8),
                     KernelConfig(16, 64, 64, 4, 6, swap_ab=1, split_k=16),
                     KernelConfig(16, 64, 128, 4, 4, split_k=8), KernelConfig(16, 32, 256, 4, 3, split_k=8)],
    "linear_medium": [*(KernelConfig(64, 64, 128, 4, 3, split_k=sp) for sp in (1, 4, 8)),
                      KernelConfig(64, 32, 128, 4, 4, split_k=8), KernelConfig(32, 64, 128, 4, 4, split_k=8),
                      KernelConfig(128, 64, 64, 8, 3, split_k=8), KernelConfig(64, 128, 64, 4, 3, split_k=8),
                      KernelConfig(128, 32, 128, 4, 3, split_k=8), KernelConfig(64, 64, 64, 4, 5, split_k=8),
                      KernelConfig(32, 64, 128, 4, 4, swap_ab=1, split_k=8),
                      KernelConfig(64, 64, 128, 4, 3, swap_ab=1, split_k=8),
                      KernelConfig(64, 128, 128, 8, 3, swap_ab=1, split_k=8),
                      KernelConfig(128, 64, 128, 8, 3, swap_ab=1, split_k=8)],
}
# Weights through tensor descriptors (TMA), as in the MoE (--with tma: only these)
LINEAR_GRIDS["linear_small"] += [*(KernelConfig(16, 64, 128, 4, 4, swap_ab=1, split_k=sp, tma=1) for sp in (1, 4, 8)),
                                 KernelConfig(16, 64, 256, 4, 3, swap_ab=1, split_k=8, tma=1),
                                 KernelConfig(16, 32, 128, 4, 4, swap_ab=1, split_k=8, tma=1)]
LINEAR_GRIDS["linear_medium"] += [*(KernelConfig(64, 64, 128, 4, 3, split_k=sp, tma=1) for sp in (1, 4, 8)),
                                  KernelConfig(64, 32, 128, 4, 4, split_k=8, tma=1),
                                  KernelConfig(128, 64, 64, 8, 3, split_k=8, tma=1),
                                  KernelConfig(64, 64, 64, 4, 5, split_k=8, tma=1),
                                  KernelConfig(64, 64, 128, 4, 3, swap_ab=1, split_k=8, tma=1),
                                  KernelConfig(32, 64, 128, 4, 4, swap_ab=1, split_k=8, tma=1)]


def tune_linear(out: Path, regime: str) -> tuple[KernelConfig, list[str]]:
    g = torch.Generator(device="cuda").manual_seed(4)
    cases = {}
    for role, n, k, with_bias in LINEAR_SHAPES:
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16, generator=g) * k**-0.5
        b = torch.randn(n, device="cuda", dtype=torch.bfloat16, generator=g) if with_bias else None
        for m in LINEAR_ROWS[regime]:
            cases[f"{role} M={m}"] = (torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=g), w, b)
    # the vendor BLAS is a candidate like the others (and the table's choice where it says so)
    grid = [KernelConfig(vendor_blas=1), *(replace(c, vendor_blas=0) for c in LINEAR_GRIDS[regime])]
    return sweep(regime, grid, cases, lambda c: linear(*c), out)


def tune_attention(out: Path) -> tuple[KernelConfig, list[str]]:
    hq, hk, d, page = 8, 2, 128, 16
    g = torch.Generator(device="cuda").manual_seed(3)
    cases = {}
    for b, seq, max_len in ((1, 2048, 4096), (64, 192, 384), (256, 192, 384), (256, 1024, 2048)):
        pages_per_seq = -(-max_len // page)
        k = torch.randn(b * pages_per_seq + 1, page, hk, d, device="cuda", dtype=torch.bfloat16, generator=g)
        v = torch.randn_like(k)
        # pages handed out shuffled, as a long-running engine's free list leaves them
        table = (torch.randperm(b * pages_per_seq, device="cuda", generator=g) + 1).view(b, pages_per_seq)
        q = torch.randn(b, hq, d, device="cuda", dtype=torch.bfloat16, generator=g)
        lens = torch.full((b,), seq, device="cuda", dtype=torch.int32)
        cases[f"B={b} S={seq}"] = (q, k, v, table.to(torch.int32), lens, max_len)

    def run(c: Any) -> torch.Tensor:
        q, k, v, table, lens, max_len = c
        splits = decode_num_splits(q.shape[0], k.shape[2], max_len, q.device)
        return cca_decode_attention(q, k, v, table, lens, num_splits=splits)

    # block_m: split target programs per SM; block_k: fewest cached tokens per split.
    grid = [*(KernelConfig(block_m=2, block_n=n, block_k=128, num_warps=4, num_stages=s)
              for n in (32, 64, 128) for s in (2, 3, 4)),
            *(KernelConfig(block_m=2, block_n=64, block_k=128, num_warps=w, num_stages=2) for w in (2, 8)),
            *(KernelConfig(block_m=m, block_n=64, block_k=128, num_warps=4, num_stages=2) for m in (1, 4, 8, 16)),
            *(KernelConfig(block_m=8, block_n=32, block_k=kk, num_warps=4, num_stages=3) for kk in (32, 64)),
            KernelConfig(block_m=2, block_n=64, block_k=64, num_warps=4, num_stages=2),
            KernelConfig(block_m=4, block_n=32, block_k=64, num_warps=2, num_stages=3)]
    return sweep("decode_attention", grid, cases, run, out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/tune"))
    ap.add_argument("--only", default="moe_medium,moe_small,conv_decode,router,decode_attention,"
                                      "linear_small,linear_medium",
                    help="comma-separated regimes to sweep (default: all)")
    ap.add_argument("--with", dest="only_field", default="", metavar="[REGIME:]FIELD,...",
                    help="sweep only the candidates that set this KernelConfig field (and the table's entry); "
                         "REGIME:FIELD for one regime, e.g. tma,router:split_k")
    args = ap.parse_args()
    for item in filter(None, args.only_field.split(",")):
        regime, _, field = item.rpartition(":")
        if field not in KernelConfig.__dataclass_fields__:
            ap.error(f"--with: {field!r} is no KernelConfig field")
        ONLY_FIELDS[regime] = field
    tuners: dict[str, Callable[[], tuple[KernelConfig, list[str]]]] = {
        "moe_medium": lambda: tune_moe(args.out, "moe_medium"),
        "moe_small": lambda: tune_moe(args.out, "moe_small"),
        "conv_decode": lambda: tune_conv(args.out),
        "router": lambda: tune_router(args.out),
        "decode_attention": lambda: tune_attention(args.out),
        "linear_small": lambda: tune_linear(args.out, "linear_small"),
        "linear_medium": lambda: tune_linear(args.out, "linear_medium"),
    }
    unknown_with = sorted(set(ONLY_FIELDS) - set(tuners) - {""})
    if unknown_with:
        ap.error(f"--with: unknown regime(s) {', '.join(unknown_with)}; known: {', '.join(tuners)}")
    regimes = args.only.split(",")
    unknown = [r for r in regimes if r not in tuners]
    if unknown:
        ap.error(f"--only: unknown regime(s) {', '.join(unknown)}; known: {', '.join(tuners)}")
    if not torch.cuda.is_available():
        print("tune_decode: no CUDA device; nothing to tune")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"# decode kernel sweep on {torch.cuda.get_device_name()}, torch {torch.__version__}")
    result: dict[str, Any] = {}
    for regime in regimes:
        try:
            best, lines = tuners[regime]()
        except Exception as exc:
            print(f"{regime} sweep failed: {type(exc).__name__}: {exc}")
            continue
        for line in lines:
            print(line, flush=True)
        result[regime] = asdict(best)
        # written after every regime, so a sweep cut short by a time limit still leaves its winners
        (args.out / "tuning.json").write_text(json.dumps(result, indent=1))
    print(f"winners -> {args.out / 'tuning.json'}: {json.dumps(result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
