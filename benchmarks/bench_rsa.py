"""Benchmark: RSA aggregation examples per GPU-hour through the packaged ZAYA1 model.

    python benchmarks/bench_rsa.py                      # 8B config, random weights, 1 GPU
    python benchmarks/bench_rsa.py --compare-actors 2   # 1 Ray GPU actor vs 2 (target >= 1.8x)

The prompts are real aggregation prompts (the default `rsa-agg-v1` template, K=4
candidates) over the MATH 8-rollout sample in ../shared/data. Its rollouts are short
(hundreds of tokens), so to measure at the report's tail length each candidate is a
long trace made by chaining the problem's rollouts (starting at a different one per
candidate) until it exceeds tau tokens; its tail is then cut exactly as a run does.
Generation goes through `model.engine` (continuous batching over the paged compressed
cache, Triton kernels, CUDA-graph decode); the baseline measured in the same run is the
readable PyTorch path (`model.generate`) on a few of the same prompts.
The model runs at random weights (default init, built on the GPU), so targets are
always `max_new_tokens` long: the number is throughput, not quality.

Without a CUDA GPU the script prints why and exits 0. Results are written to
benchmarks/results/rsa-<UTC date>-<gpu>.json (a dated record, never typed into prose).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "qwen25-math-eval" / "math_cot_100_rollouts8.jsonl"


def build_prompts(n: int, tau: int, k: int, tokenizer) -> tuple[list[str], list[int]]:
    """n aggregation prompts with K tails of (close to) tau tokens each; also their
    tail token counts."""
    from zaya_data.rsa.prompt import TEMPLATES, render_aggregation_prompt
    from zaya_data.rsa.tails import extract_tails

    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    prompts, tail_tokens = [], []
    for i in range(n):
        row = rows[i % len(rows)]
        rollouts = row["code"]
        long = []
        for j in range(k):
            parts, total, r = [], 0, j
            while total <= tau:
                text = rollouts[r % len(rollouts)]
                parts.append(text)
                total += len(tokenizer.encode(text, add_special_tokens=False).ids)
                r += 1
            long.append("\n\n".join(parts))
        tails = extract_tails(long, tokenizer, tau, 64)
        tail_tokens.extend(t.tokens for t in tails)
        prompts.append(render_aggregation_prompt(TEMPLATES["rsa-agg-v1"], row["question"], tails))
    return prompts, tail_tokens


def run_teacher(teacher, prompts: list[str], max_new: int) -> dict:
    from zaya_data.rsa.run import request_seed
    from zaya_data.rsa.teachers import GenerationRequest, Sampling

    sampling = Sampling(temperature=0.8, top_p=0.95, max_tokens=max_new)
    reqs = [GenerationRequest(p, request_seed(0, f"bench{i}", 1, 0)) for i, p in enumerate(prompts)]
    teacher.generate(reqs[: min(len(reqs), 2)], Sampling(max_tokens=4))  # warm-up: kernels, allocator
    t0 = time.perf_counter()
    gens = teacher.generate(reqs, sampling)
    seconds = time.perf_counter() - t0
    errors = sum(g.error is not None for g in gens)
    tokens = sum(max(0, g.completion_tokens) for g in gens)
    return {"examples": len(gens) - errors, "errors": errors, "seconds": seconds, "generated_tokens": tokens}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="zaya1-8b", help="shipped model configuration (random weights)")
    ap.add_argument("--checkpoint", help="a real checkpoint folder instead of random weights")
    ap.add_argument("--tau", type=int, default=4096)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16, help="prompts per engine batch")
    ap.add_argument("--engine", default="on", choices=("on", "off"), help="generate through model.engine")
    ap.add_argument("--baseline-prompts", type=int, default=4,
                    help="also time model.generate (the PyTorch path) on this many of the prompts (0: skip)")
    ap.add_argument("--baseline-batch-size", type=int, default=4)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--compare-actors", type=int, default=0,
                    help="also run N Ray GPU actors and report the speed-up over one actor")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("bench_rsa: skipped, no CUDA GPU on this machine (the benchmark measures GPU generation)")
        return 0
    if args.compare_actors and torch.cuda.device_count() < args.compare_actors:
        print(f"bench_rsa: skipped, --compare-actors {args.compare_actors} needs that many GPUs "
              f"(found {torch.cuda.device_count()})")
        return 0

    from zaya_data.rsa.config import TeacherSpec
    from zaya_data.rsa.model_teacher import LocalModelTeacher, RayModelPool
    from zaya_data.rsa.teachers import Sampling
    from zaya_data.tokenizer import load_tokenizer

    tok = load_tokenizer("embedded")
    prompts, tails = build_prompts(args.prompts, args.tau, args.k, tok.text_tokenizer)
    ckpt = args.checkpoint or f"random:{args.config}"
    spec = TeacherSpec(kind="zaya1", sampling=Sampling(), checkpoint=ckpt, device="cuda", dtype=args.dtype,
                       batch_size=args.batch_size, engine=args.engine)
    gpu = torch.cuda.get_device_name(0)
    record: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "gpu": gpu,
        "checkpoint": ckpt, "tau": args.tau, "k": args.k, "prompts": len(prompts),
        "mean_tail_tokens": sum(tails) / len(tails), "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size, "dtype": args.dtype, "engine": args.engine, "runs": {},
    }
    teacher = LocalModelTeacher.from_spec(spec, tok)
    record["mean_prompt_tokens"] = sum(len(teacher.encode(p)) for p in prompts) / len(prompts)
    r = run_teacher(teacher, prompts, args.max_new_tokens)
    r["examples_per_gpu_hour"] = r["examples"] / r["seconds"] * 3600
    r["tokens_per_second"] = r["generated_tokens"] / r["seconds"]
    record["runs"]["in_process_1gpu"] = r
    print(f"1 GPU in process ({'engine' if args.engine == 'on' else 'model.generate'}): "
          f"{r['examples_per_gpu_hour']:,.0f} aggregation examples/GPU-hour ({r['tokens_per_second']:,.0f} generated tok/s)")
    if args.baseline_prompts and args.engine == "on":
        # The baseline: the readable PyTorch path on the same weights, the same prompts and
        # max_new_tokens, in this run.
        model = teacher.model
        del teacher
        torch.cuda.empty_cache()
        base = LocalModelTeacher(model, tok, ckpt, args.baseline_batch_size, engine="off")
        b = run_teacher(base, prompts[: args.baseline_prompts], args.max_new_tokens)
        b["examples_per_gpu_hour"] = b["examples"] / b["seconds"] * 3600
        b["tokens_per_second"] = b["generated_tokens"] / b["seconds"]
        b["batch_size"] = args.baseline_batch_size
        record["runs"]["in_process_1gpu_model_generate"] = b
        record["engine_over_model_generate"] = r["examples_per_gpu_hour"] / b["examples_per_gpu_hour"]
        print(f"baseline model.generate, batch {args.baseline_batch_size}: {b['examples_per_gpu_hour']:,.0f} "
              f"examples/GPU-hour ({b['tokens_per_second']:,.0f} tok/s); engine / baseline = "
              f"{record['engine_over_model_generate']:.2f}x")
        teacher = base
    del teacher
    torch.cuda.empty_cache()
    if args.compare_actors:
        for n in (1, args.compare_actors):
            pool = RayModelPool(spec, num_actors=n)
            try:
                rr = run_teacher(pool, prompts, args.max_new_tokens)
            finally:
                pool.close()
            rr["examples_per_gpu_hour"] = rr["examples"] / rr["seconds"] * 3600 / n
            record["runs"][f"ray_{n}_actors"] = rr
            print(f"{n} Ray actor(s): {rr['seconds']:.1f}s, {rr['examples_per_gpu_hour']:,.0f} examples/GPU-hour")
        one, many = record["runs"]["ray_1_actors"], record["runs"][f"ray_{args.compare_actors}_actors"]
        record["speedup"] = one["seconds"] / many["seconds"]
        print(f"speed-up of {args.compare_actors} actors over 1: {record['speedup']:.2f}x")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"rsa-{record['date'][:10]}-{gpu.replace(' ', '_')}.json"
    (out / name).write_text(json.dumps(record, indent=1))
    print(f"recorded: {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
