"""Where one decode step of the engine spends its time (8B configuration, random bf16 weights).

Usage (on a GPU):  python scripts/profile_engine.py --batch 256 --out DIR

For one batch size, after every request is prefilled, it measures:
  step        Engine.step() wall time (schedule + inputs + graph replay + sampling + stop checks);
  replay      the CUDA graph replay alone (events around DecodeGraphs.run);
  sample      the sampler alone on the step's logits (greedy, and temperature 0.8);
  kernels     a torch.profiler trace of eager decode steps: CUDA time per kernel name, per step,
              sorted, with the share of the step each takes (what to fuse or speed up next).
Prints the tables and writes them, with the raw profiler table, under --out.

--routing random (default) keeps the random weights' skewed router (a batch reads few experts);
--routing balanced first fits the balancing biases as a trained checkpoint has them (evenly
loaded experts; see scripts/bench_engine.py and model/routing.py). The output says which.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import (  # noqa: E402
    add_routing_args, balance_for_decode, build_model, cuda_time, describe_fit, prompts_for,
)
from model import SamplingParams  # noqa: E402
from model.engine import Engine, EngineConfig  # noqa: E402
from model.engine.graphs import decode_inputs  # noqa: E402
from model.engine.sampler import SamplingBatch, sample  # noqa: E402
from model.engine.sequence import Status  # noqa: E402


@torch.inference_mode()
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--profile-steps", type=int, default=3)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--out", type=Path, default=Path("out/profile"))
    add_routing_args(ap)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("profile_engine: no CUDA device")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    b = args.batch
    model = build_model("zaya1-8b")
    fit = None
    if args.routing == "balanced":
        # Steps run at positions prompt_len .. prompt_len + steps + 3 (replays and the trace don't advance).
        fit = balance_for_decode(model, args.prompt_len, args.steps + 8, args.calib_prompts)
        print(describe_fit(fit), flush=True)
    max_len = args.prompt_len + 4 * args.steps + 64
    engine = Engine(model, EngineConfig(max_batch_size=b, max_num_tokens=max(8192, b), page_size=16,
                                        max_model_len=max_len, num_pages=b * (max_len // 16 + 1) + 1,
                                        graph_buckets=(b,)))
    params = SamplingParams(max_new_tokens=10**6, stop_token_ids=())
    ids = [engine.add_request(p, params) for p in prompts_for(b, args.prompt_len, model.config.vocab_size)]
    seqs = [engine._seqs[i] for i in ids]
    while any(s.status is not Status.RUNNING for s in seqs):
        engine.step()
    for _ in range(3):
        engine.step()
    out: dict = {"gpu": torch.cuda.get_device_name(), "batch": b, "routing": args.routing, "torch": torch.__version__,
                 "date": time.strftime("%Y-%m-%d %H:%M")}
    if fit is not None:
        out["routing_fit"] = fit

    # whole steps
    t, _ = cuda_time(lambda: [engine.step() for _ in range(args.steps)])
    out["step_ms"] = 1e3 * t / args.steps
    # the graph replay alone
    host = torch.tensor([[s.last_token for s in seqs], [s.num_computed for s in seqs],
                         [s.slot for s in seqs], [s.num_computed + 1 for s in seqs]], dtype=torch.int64)
    t, logits = cuda_time(lambda: [engine.graphs.run(host) for _ in range(args.steps)][-1])
    out["replay_ms"] = 1e3 * t / args.steps
    for name, temp in (("sample_greedy_ms", 0.0), ("sample_t0.8_ms", 0.8)):
        batch = SamplingBatch.build([temp] * b, [1.0] * b, [0] * b, list(range(b)), [5] * b, engine.device)
        sample(logits, batch)
        t, _ = cuda_time(lambda: [sample(logits, batch) for _ in range(args.steps)])
        out[name] = 1e3 * t / args.steps
    # host work of a step: everything but replay and sampling
    out["host_other_ms"] = out["step_ms"] - out["replay_ms"] - out["sample_greedy_ms"]

    # kernel breakdown of eager decode steps
    splits = engine._splits(b, max_len)
    inp = decode_inputs(host.to(engine.device))
    engine.runner.decode(inp, splits)
    torch.cuda.synchronize()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(args.profile_steps):
            engine.runner.decode(inp, splits)
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        dev_us = getattr(e, "device_time_total", None)
        if dev_us is None:
            dev_us = e.cuda_time_total
        if dev_us <= 0:
            continue
        rows.append({"kernel": e.key[:90], "us_per_step": dev_us / args.profile_steps,
                     "calls_per_step": e.count / args.profile_steps})
    rows.sort(key=lambda r: -r["us_per_step"])
    total = sum(r["us_per_step"] for r in rows)
    out["eager_kernel_us_per_step"] = total
    out["kernels"] = rows
    (args.out / f"profile-b{b}.json").write_text(json.dumps(out, indent=1))
    (args.out / f"profile-b{b}.txt").write_text(prof.key_averages().table(sort_by="cuda_time_total", row_limit=80))

    print(f"# engine decode step, zaya1-8b random bf16, {args.routing} routing, batch {b}, {out['gpu']}, {out['date']}")
    for k in ("step_ms", "replay_ms", "sample_greedy_ms", "sample_t0.8_ms", "host_other_ms"):
        print(f"{k:20s} {out[k]:8.3f}")
    print(f"eager kernels total {total / 1e3:8.3f} ms per step, {sum(r['calls_per_step'] for r in rows):.0f} launches")
    print(f"{'us/step':>9s} {'share':>6s} {'calls':>6s}  kernel")
    for r in rows[:args.top]:
        print(f"{r['us_per_step']:9.1f} {r['us_per_step'] / total:6.1%} {r['calls_per_step']:6.0f}  {r['kernel']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
