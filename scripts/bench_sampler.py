"""Time the engine's no-cut sampling draw on CUDA: the PyTorch path vs the fused Triton kernel.

Usage (on a GPU):  python scripts/bench_sampler.py [--vocab 262272] [--dtype bf16] [--iters 50]

Per batch size B in (1, 64, 256): `sample_torch` (the PyTorch Gumbel-max path: ~10 int64 [B, V]
kernels), `sample` (which on CUDA without top-k/top-p runs `model.kernels.sampling.gumbel_argmax`,
one launch that also forms the row keys), and a plain greedy argmax as the floor of one read of the
logits. Temperature 0.8 on every row, as the RSA generation uses. Each entry is the mean of
`--iters` back-to-back calls timed with CUDA events after warm-up (L2 is not flushed: at
B >= 64 the logits exceed it anyway). Also checks that both paths drew the same tokens.
Without CUDA it prints a message and exits 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.engine.sampler import SamplingBatch, sample, sample_torch  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def time_ms(fn: Callable[[], torch.Tensor], iters: int, warmup: int = 5) -> float:
    """Mean milliseconds per call of `fn` on the current stream."""
    for _ in range(warmup):  # compiles the kernel, fills the caching allocator
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=262_272)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="logits dtype (the model's is bf16)")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 64, 256])
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_sampler: no CUDA device; nothing to time.")
        return 0
    dev = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(dev)}, V={args.vocab}, logits {args.dtype}, temperature 0.8, "
          f"mean of {args.iters} calls")
    print(f"{'B':>5} {'torch ms':>10} {'kernel ms':>10} {'speedup':>8} {'greedy ms':>10}  same draws")
    for b in args.batch:
        g = torch.Generator(device=dev).manual_seed(b)
        logits = (torch.randn(b, args.vocab, device=dev, generator=g) * 3).to(DTYPES[args.dtype])
        batch = SamplingBatch.build([0.8] * b, [1.0] * b, [0] * b, list(range(b)), [1] * b, dev)
        same = torch.equal(sample(logits, batch), sample_torch(logits, batch))
        t_torch = time_ms(lambda: sample_torch(logits, batch), args.iters)
        t_kernel = time_ms(lambda: sample(logits, batch), args.iters)
        t_greedy = time_ms(lambda: logits.argmax(dim=-1), args.iters)
        print(f"{b:>5} {t_torch:>10.3f} {t_kernel:>10.3f} {t_torch / t_kernel:>7.1f}x {t_greedy:>10.3f}  "
              f"{'yes' if same else 'NO'}")
        del logits, batch
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
