"""Decode throughput of the engine against our PyTorch path, upstream transformers, and the roofline.

Usage (on a GPU; see scripts/gpu_engine.sh):  python scripts/bench_engine.py --out DIR

8B configuration at random bf16 weights on one GPU. Per batch size B (1, 64, 256 and the
largest this run allows), every case decodes greedily from B random prompts of --prompt-len
tokens, stop tokens off:
  engine        Engine.step() with CUDA graphs, timed over --steps decode steps once every
                request is prefilled (sampling and the per-step host sync included);
  engine_eager  the same without graphs (small batches only: it shows what graphs buy);
  pytorch       model.generate: decode time = T(steps + 1 new tokens) - T(1 new token), so the
                prefill, which both calls share, cancels;
  hf            transformers ZayaForCausalLM.generate on the same weights, timed the same way
                (skipped with a note when transformers has no Zaya);
  roofline      B / (bytes one decode step must move / HBM bandwidth). Bytes: the weights the
                step touches (every non-expert weight, the tied embedding read by lm_head, and
                per layer the distinct experts the batch routed to, counted from the engine's
                own router choices in one eager step), the K/V cache read by attention, the
                conv/value state read and written, and the bf16 logits written. Bandwidth: a
                2 GiB device-to-device copy in the same run (bytes read + written).
All times are CUDA events after warm-up. A case that fails prints its error and the run goes on.
Also printed: compressed K/V bytes per token against multi-head attention of the same hidden size.

Routing (--routing; the result JSON's "routing" and the table header say which):
  random    the router as the random weights leave it (the default, and what earlier results
            used). Its choices are very skewed: at batch 256 a layer sends its tokens to ~4.5 of
            its 16 experts, so a step reads far fewer expert weights than on a real checkpoint.
  balanced  first fit the balancing biases with `model.routing.balance_routing_` the way ZAYA1
            training does (auxiliary-loss-free load balancing: each expert's bias steps up while it
            gets fewer tokens than the mean, down while more), so experts are evenly loaded as on a
            trained checkpoint and a batch of 64+ touches nearly all of them (each layer's share of
            mixture-of-depths skips stays as the random weights have it). Calibration prompts are
            --calib-prompts other random prompts (seeds no measured batch uses), long enough to
            reach the positions the decode steps run at; only those positions are counted, since a
            random model's routing drifts with position. The fit's time and before/after loads are
            printed and stored under "routing_fit".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import (  # noqa: E402
    SamplingParams,
    Zaya1Config,
    Zaya1ForCausalLM,
    balance_routing_,
    generate,
    parameter_counts,
    randomize_,
)
from model.engine import Engine, EngineConfig  # noqa: E402
from model.engine.sequence import Status  # noqa: E402

DEV = "cuda"  # --device cpu (with --config tiny) only smoke-tests this script's logic


def cuda_time(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds fn takes on the GPU stream (events around it, synchronized)."""
    if DEV == "cpu":
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    out = fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000.0, out


def hbm_bandwidth() -> float:
    """Bytes/s of a 2 GiB device-to-device copy (read + write), best of 5 after a warm-up."""
    n = 2**30 // 2 if DEV == "cuda" else 2**26
    src = torch.randn(n, device=DEV, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(cuda_time(lambda: dst.copy_(src))[0] for _ in range(5))
    del src, dst
    return 2 * n * 2 / best


def build_model(name: str) -> Zaya1ForCausalLM:
    config = Zaya1Config.named(name)
    with torch.device("meta"):
        model = Zaya1ForCausalLM(config)
    model.materialize_(DEV, torch.bfloat16 if DEV == "cuda" else torch.float32)
    # skip_bias 0 lets the mixture-of-depths class win now and then, as in training.
    return randomize_(model, seed=0, skip_bias=0.0).eval()


def prompts_for(batch: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(8, vocab, (batch, length), generator=g).tolist()


CALIB_SEED = 1_000_003  # measured batches use seed = batch size (profile_engine: 0); never this one


def balance_for_decode(model: Zaya1ForCausalLM, prompt_len: int, decode_len: int, prompts: int) -> dict[str, Any]:
    """Fit the balancing biases (--routing balanced): the loads of `prompts` calibration sequences
    of prompt_len + decode_len random tokens, counted at positions >= prompt_len (where the timed
    decode steps run). Returns the fit's stats plus its wall time and a summary."""
    ids = torch.tensor(prompts_for(prompts, prompt_len + decode_len, model.config.vocab_size, seed=CALIB_SEED))
    counted = torch.zeros_like(ids, dtype=torch.bool)
    counted[:, prompt_len:] = True
    if DEV == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    stats = balance_routing_(model, ids, count_mask=counted)
    if DEV == "cuda":
        torch.cuda.synchronize()
    stats["seconds"] = time.perf_counter() - t0
    stats["calib_prompts"], stats["calib_len"], stats["counted_from"] = prompts, prompt_len + decode_len, prompt_len
    stats["summary"] = {when: {"max_over_mean_mean": sum(s["max_over_mean"]) / len(s["max_over_mean"]),
                               "max_over_mean_worst": max(s["max_over_mean"]),
                               "distinct_experts_min": min(s["distinct_experts"]),
                               "skip_fraction_mean": sum(s["skip_fraction"]) / len(s["skip_fraction"])}
                        for when, s in (("before", stats["before"]), ("after", stats["after"]))}
    return stats


def add_routing_args(ap: argparse.ArgumentParser) -> None:
    """--routing and --calib-prompts (this script and profile_engine.py)."""
    ap.add_argument("--routing", default="random", choices=("random", "balanced"),
                    help="random: the random weights' skewed router; balanced: fit the balancing biases first, "
                         "as a trained checkpoint has them (see scripts/bench_engine.py's docstring)")
    ap.add_argument("--calib-prompts", type=int, default=64, help="calibration sequences of --routing balanced")


def describe_fit(stats: dict[str, Any]) -> str:
    b, a = stats["summary"]["before"], stats["summary"]["after"]
    return (f"balanced routing: fit in {stats['seconds']:.1f} s ({stats['steps']} steps, {stats['calib_prompts']} "
            f"calibration prompts of {stats['calib_len']} tokens, {stats['tokens_counted']} counted); expert max/mean "
            f"load {b['max_over_mean_mean']:.2f} (worst layer {b['max_over_mean_worst']:.2f}) -> "
            f"{a['max_over_mean_mean']:.2f} ({a['max_over_mean_worst']:.2f}), fewest experts used "
            f"{b['distinct_experts_min']} -> {a['distinct_experts_min']}, skip share "
            f"{b['skip_fraction_mean']:.3f} -> {a['skip_fraction_mean']:.3f}")


# ---- the engine ----------------------------------------------------------------------------------
def engine_decode(engine: Engine, prompts: list[list[int]], steps: int, graphs: bool,
                  routing: dict[str, Any] | None = None) -> float:
    """Tokens/s over `steps` pure decode steps of the whole batch (after all prefills)."""
    saved = engine.graphs
    if not graphs:
        engine.graphs = None
    ids: list[int] = []
    try:
        params = SamplingParams(max_new_tokens=10**6, stop_token_ids=())
        ids = [engine.add_request(p, params) for p in prompts]
        seqs = [engine._seqs[i] for i in ids]

        def prefilling() -> bool:
            return any(s.status not in (Status.RUNNING, Status.FINISHED) for s in seqs)

        for _ in range(100_000):  # a bound, so a scheduling bug fails the case instead of hanging it
            if not prefilling():
                break
            engine.step()
        else:
            raise RuntimeError("prefill did not finish")
        for _ in range(3):  # warm-up at the final batch composition
            engine.step()
        if routing is not None:
            record_routing(engine, routing)
        t, _ = cuda_time(lambda: [engine.step() for _ in range(steps)])
        routing_lengths = [s.num_computed for s in seqs]
        if routing is not None:
            routing["mean_cached_tokens"] = sum(routing_lengths) / len(routing_lengths)
        return len(prompts) * steps / t
    finally:
        for i in ids:
            engine.abort(i)
        engine.graphs = saved


def record_routing(engine: Engine, out: dict[str, Any]) -> None:
    """Distinct experts per layer the batch routes to in one (eager) decode step."""
    runner = engine.runner
    ops = runner.ops
    experts = engine.model.config.num_experts
    per_layer: list[int] = []

    def router(*args: Any, **kw: Any) -> tuple[torch.Tensor, torch.Tensor]:
        w, choice = ops.router_top1(*args, **kw)
        if choice.shape[0] == out["batch"]:
            per_layer.append(int((torch.bincount(choice.long(), minlength=experts + 1)[:experts] > 0).sum()))
        return w, choice

    saved_graphs = engine.graphs
    runner.ops, engine.graphs = dataclasses.replace(ops, router_top1=router), None
    try:
        engine.step()
    finally:
        runner.ops, engine.graphs = ops, saved_graphs
    out["distinct_experts_per_layer"] = per_layer


# ---- baselines ----------------------------------------------------------------------------------
def generate_decode(run: Callable[[int], Any], batch: int, steps: int) -> float:
    """Tokens/s of the decode part of a generate call: (T(steps+1) - T(1)) over steps."""
    run(2)  # warm-up
    t1, _ = cuda_time(lambda: run(1))
    tk, _ = cuda_time(lambda: run(steps + 1))
    if tk - t1 <= 0.05 * tk:  # the decode part drowned in the prefill's run-to-run noise
        raise RuntimeError(f"decode time not resolvable: T(1 token) {t1:.3f} s, T({steps + 1} tokens) {tk:.3f} s")
    return batch * steps / (tk - t1)


def pytorch_run(model: Zaya1ForCausalLM, prompts: list[list[int]]) -> Callable[[int], Any]:
    return lambda n: generate(model, prompts, SamplingParams(max_new_tokens=n, stop_token_ids=()))


def hf_model(model: Zaya1ForCausalLM) -> Any:
    """transformers.ZayaForCausalLM with our weights, built directly on the GPU in bf16.

    (model.hf_reference builds on the CPU in fp32 first: fine for the tiny model, 35 GB and
    minutes of initialization for the 8B.)"""
    from transformers import ZayaConfig, ZayaForCausalLM

    raw = {k: v for k, v in model.config.to_dict().items() if k not in ("model_type", "architectures")}
    last: Exception | None = None
    for impl in ("sdpa", "eager"):  # some versions implement only eager attention for Zaya
        config = ZayaConfig(**raw)
        config._attn_implementation = impl
        before = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            with torch.device(DEV):
                ref = ZayaForCausalLM(config)
            ref.load_state_dict(model.state_dict(), strict=True)
            return ref.eval()
        except Exception as exc:
            last = exc
        finally:
            torch.set_default_dtype(before)
    raise RuntimeError(f"could not build ZayaForCausalLM: {last!r}")


def hf_run(ref: Any, prompts: list[list[int]]) -> Callable[[int], Any]:
    ids = torch.tensor(prompts, device=DEV)
    mask = torch.ones_like(ids)

    def run(n: int) -> Any:
        with torch.inference_mode():
            return ref.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                do_sample=False, pad_token_id=0)

    return run


# ---- roofline -----------------------------------------------------------------------------------
def step_bytes(config: Zaya1Config, batch: int, routing: dict[str, Any], cached_tokens: float) -> dict[str, float]:
    counts = parameter_counts(config)
    embedding = config.vocab_size * config.hidden_size
    per_expert = 3 * config.moe_intermediate_size * config.hidden_size
    all_experts = per_expert * config.num_experts * config.num_hidden_layers
    dense = counts["total"] - embedding - all_experts  # attention, router, norms, scalings
    experts_touched = sum(routing["distinct_experts_per_layer"]) * per_expert
    kv_per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * 2
    state = config.num_hidden_layers * (2 * config.conv_channels + config.num_key_value_heads * config.head_dim // 2) * 2
    parts = {
        "weights": 2.0 * (dense + embedding + experts_touched),
        "kv_read": batch * cached_tokens * kv_per_token,
        "state_rw": 2.0 * batch * state,
        "logits_write": 2.0 * batch * config.vocab_size,
    }
    parts["total"] = sum(parts.values())
    return parts


def kv_bytes(config: Zaya1Config) -> dict[str, float]:
    layers, d = config.num_hidden_layers, config.head_dim
    cca = 2 * layers * config.num_key_value_heads * d * 2
    mha = 2 * layers * config.hidden_size * 2  # hidden/head_dim heads of head_dim, K and V, bf16
    return {"cca_kv_bytes_per_token": cca, "mha_kv_bytes_per_token": mha, "mha_over_cca": mha / cca}


# ---- driver -------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/engine"))
    ap.add_argument("--batches", default="1,64,256,max")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--max-batch", type=int, default=1024, help="cap of the 'max' batch (time, not memory)")
    ap.add_argument("--baseline-max-batch", type=int, default=256, help="largest batch run through pytorch/hf")
    ap.add_argument("--eager-max-batch", type=int, default=64, help="largest batch run through the eager engine")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--config", default="zaya1-8b", help="a shipped configuration (tiny: smoke test)")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: smoke-test the script")
    ap.add_argument("--time-budget", type=float, default=200.0, help="seconds; later baseline cases are skipped")
    add_routing_args(ap)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    global DEV
    DEV = args.device
    if DEV == "cuda" and not torch.cuda.is_available():
        print("bench_engine: no CUDA device; nothing to measure")
        return 0
    t_start = time.time()
    gpu = torch.cuda.get_device_name() if DEV == "cuda" else "cpu"
    result: dict[str, Any] = {"gpu": gpu, "config": args.config, "routing": args.routing, "torch": torch.__version__,
                              "date": time.strftime("%Y-%m-%d"), "args": {k: str(v) for k, v in vars(args).items()},
                              "errors": [], "notes": []}

    def note(msg: str) -> None:
        print(msg, flush=True)
        result["notes"].append(msg)

    def fail(case: str) -> None:
        msg = f"{case}: {traceback.format_exc(limit=3)}"
        print(msg, flush=True)
        result["errors"].append(msg)
        if DEV == "cuda":
            torch.cuda.empty_cache()

    bw = hbm_bandwidth()
    result["hbm_bytes_per_s"] = bw
    note(f"HBM bandwidth (2 GiB D2D copy): {bw / 1e12:.2f} TB/s")
    model = build_model(args.config)
    config = model.config
    if args.routing == "balanced":
        # Decode runs at positions prompt_len .. prompt_len + steps + 4 (3 warm-up steps, one routing step).
        result["routing_fit"] = balance_for_decode(model, args.prompt_len, args.steps + 8, args.calib_prompts)
        note(describe_fit(result["routing_fit"]))
    result.update(kv_bytes(config))
    note(f"K/V bytes per token: CCA {result['cca_kv_bytes_per_token']:.0f}, MHA of hidden {config.hidden_size} "
         f"{result['mha_kv_bytes_per_token']:.0f} ({result['mha_over_cca']:.1f}x)")

    # One engine for all batch sizes: pages for the largest, graphs for exactly these buckets.
    page = 16
    max_len = args.prompt_len + 3 * args.steps + 64
    per_seq_bytes = math.ceil(max_len / page) * page * result["cca_kv_bytes_per_token"]
    if DEV == "cuda":
        free, _ = torch.cuda.mem_get_info()
        fits = int((free - 24 * 2**30) // per_seq_bytes)  # 24 GiB left for graphs, logits, baselines
    else:
        fits = args.max_batch
    result["largest_batch_kv_fits"] = fits
    wanted = []
    for b in args.batches.split(","):
        wanted.append(min(fits, args.max_batch) if b == "max" else int(b))
    batches = sorted(set(b for b in wanted if 0 < b <= fits))
    note(f"batches {batches} (K/V room for {fits} sequences of {max_len} tokens; 'max' capped at {args.max_batch})")
    engine = None
    try:
        t0 = time.time()
        engine = Engine(model, EngineConfig(max_batch_size=max(batches), max_num_tokens=max(8192, max(batches)),
                                            page_size=page, max_model_len=max_len,
                                            num_pages=max(batches) * math.ceil(max_len / page) + 1,
                                            graph_buckets=tuple(batches)))
        note(f"engine ready in {time.time() - t0:.1f} s (graphs for {batches})")
    except Exception:
        fail("engine init")

    hf = None
    if not args.skip_hf:
        try:
            import transformers

            if not hasattr(transformers, "ZayaForCausalLM"):
                note(f"transformers {transformers.__version__} has no ZayaForCausalLM: the hf column is skipped")
            else:
                hf = hf_model(model)
        except Exception:
            fail("hf model")

    rows = []
    for b in batches:
        row: dict[str, Any] = {"batch": b}
        prompts = prompts_for(b, args.prompt_len, config.vocab_size, seed=b)
        routing: dict[str, Any] = {"batch": b}
        if engine is not None:
            try:
                row["engine"] = engine_decode(engine, prompts, args.steps, graphs=True, routing=routing)
            except Exception:
                fail(f"engine B={b}")
            if b <= args.eager_max_batch:
                try:
                    row["engine_eager"] = engine_decode(engine, prompts, args.steps, graphs=False)
                except Exception:
                    fail(f"engine_eager B={b}")
        over = time.time() - t_start > args.time_budget
        if b <= args.baseline_max_batch and not over:
            try:
                row["pytorch"] = generate_decode(pytorch_run(model, prompts), b, args.steps)
            except Exception:
                fail(f"pytorch B={b}")
            if hf is not None and time.time() - t_start <= args.time_budget:
                try:
                    row["hf"] = generate_decode(hf_run(hf, prompts), b, args.steps)
                except Exception:
                    fail(f"hf B={b}")
        elif over:
            note(f"B={b}: time budget spent, baselines skipped")
        if "distinct_experts_per_layer" in routing:
            parts = step_bytes(config, b, routing, routing["mean_cached_tokens"])
            row["roofline"] = b / (parts["total"] / bw)
            row["step_bytes"] = parts
            row["mean_distinct_experts"] = sum(routing["distinct_experts_per_layer"]) / len(routing["distinct_experts_per_layer"])
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "step_bytes"}), flush=True)
        if DEV == "cuda":
            torch.cuda.empty_cache()
    result["rows"] = rows
    result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30 if DEV == "cuda" else 0.0
    result["elapsed_s"] = time.time() - t_start
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"bench_engine-{stamp}.json").write_text(json.dumps(result, indent=2))
    print_table(result)
    return 1 if result["errors"] else 0


def print_table(result: dict[str, Any]) -> None:
    def f(v: float | None) -> str:
        return f"{v:10.0f}" if v else "         -"

    def r(a: float | None, b: float | None) -> str:
        return f"{a / b:8.2f}x" if a and b else "        -"

    print(f"\n# decode tokens/s, {result['config']} at random weights, {result['gpu']}, {result['date']}")
    routing = result.get("routing", "random")
    if routing == "balanced" and "routing_fit" in result:
        a = result["routing_fit"]["summary"]["after"]
        print(f"# routing: balanced (biases fit like a trained checkpoint's: expert max/mean load "
              f"{a['max_over_mean_mean']:.2f} over calibration tokens; 'experts' = distinct per layer in a step)")
    else:
        print(f"# routing: {routing} (random weights' router: skewed, few experts per step; 'experts' = distinct per layer)")
    print(f"# HBM {result['hbm_bytes_per_s'] / 1e12:.2f} TB/s; K/V per token {result['cca_kv_bytes_per_token']:.0f} B "
          f"(MHA {result['mha_kv_bytes_per_token']:.0f} B, {result['mha_over_cca']:.1f}x)")
    print(f"{'batch':>6} {'engine':>10} {'eng_eager':>10} {'pytorch':>10} {'hf':>10} {'roofline':>10} "
          f"{'eng/pt':>9} {'eng/hf':>9} {'eng/roof':>9} {'experts':>8}")
    for row in result["rows"]:
        e = row.get("engine")
        print(f"{row['batch']:6d} {f(e)} {f(row.get('engine_eager'))} {f(row.get('pytorch'))} {f(row.get('hf'))} "
              f"{f(row.get('roofline'))} {r(e, row.get('pytorch'))} {r(e, row.get('hf'))} {r(e, row.get('roofline'))} "
              f"{row.get('mean_distinct_experts', 0):8.1f}")
    if result["errors"]:
        print(f"# {len(result['errors'])} case(s) failed; see the log / JSON 'errors'")


if __name__ == "__main__":
    sys.exit(main())
