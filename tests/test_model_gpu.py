"""ZAYA1 on one GPU: the 8B configuration at random bf16 weights (4K prefill + 128 decoded tokens,
memory against the parameter count) and the tiny model on CUDA against CPU.

Skipped without CUDA. `scripts/gpu_model_check.sh` runs these on the device machine and
writes the measurements to $ZAYA_GPU_RESULTS (JSON) when it is set.
"""

from __future__ import annotations

import json
import os
import time

import pytest
import torch

from model import SamplingParams, Zaya1Config, Zaya1ForCausalLM, generate, parameter_counts, randomize_

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

RESULTS: dict[str, object] = {}


def record(**values: object) -> None:
    RESULTS.update(values)
    path = os.environ.get("ZAYA_GPU_RESULTS")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(RESULTS, f, indent=2, sort_keys=True)
    print(values)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_tiny_model_on_cuda_matches_cpu_fp32_and_generates_in_bf16() -> None:
    config = Zaya1Config.named("tiny")
    cpu = randomize_(Zaya1ForCausalLM(config), seed=3, skip_bias=0.1).eval()
    gpu = randomize_(Zaya1ForCausalLM(config), seed=3, skip_bias=0.1).eval().cuda()
    ids = torch.randint(8, config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    torch.backends.cudnn.allow_tf32 = False  # the CCA convolutions in true fp32
    with torch.no_grad():
        err = rel_err(gpu(ids.cuda()).cpu(), cpu(ids))
    record(tiny_cuda_vs_cpu_fp32_rel_err=err)
    assert err < 1e-4
    gpu.to_dtype(torch.bfloat16)
    prompts = [[2, 10, 11, 12], [2, 99, 100, 101, 102, 103, 104]]
    out = generate(gpu, prompts, SamplingParams(max_new_tokens=16, stop_token_ids=()))
    alone = generate(gpu, prompts[1:], SamplingParams(max_new_tokens=16, stop_token_ids=()))
    assert [c.completion_tokens for c in out] == [16, 16]
    record(tiny_bf16_batched_equals_alone=out[1].token_ids == alone[0].token_ids)


def test_8b_bf16_prefill_4k_then_128_decode_steps_and_memory() -> None:
    config = Zaya1Config.named("zaya1-8b")
    counts = parameter_counts(config)
    torch.cuda.reset_peak_memory_stats()
    with torch.device("meta"):
        model = Zaya1ForCausalLM(config)
    model.materialize_("cuda", torch.bfloat16)
    # Skip bias below -1 would never fire; 0 lets the skip class win now and then, as in training.
    randomize_(model, seed=0, skip_bias=0.0).eval()
    torch.cuda.synchronize()
    weights_bytes = torch.cuda.memory_allocated()
    expected = 2 * counts["total"] + 4 * config.num_hidden_layers * (config.num_experts + 1)  # bf16 + fp32 biases
    record(
        gpu=torch.cuda.get_device_name(),
        params_total=counts["total"],
        weights_gib=weights_bytes / 2**30,
        weights_bytes_over_2x_params=weights_bytes / (2 * counts["total"]),
    )
    assert abs(weights_bytes - expected) / expected < 0.01

    prompt_len, new_tokens = 4096, 128
    ids = torch.randint(8, config.vocab_size, (1, prompt_len), generator=torch.Generator().manual_seed(1)).cuda()
    cache = model.new_cache(1, prompt_len + new_tokens)
    with torch.inference_mode():
        model(ids[:, :16], cache=model.new_cache(1, 16))  # warm-up: kernels, allocator
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        logits = model(ids, cache=cache, num_logits_to_keep=1)[:, -1]
        torch.cuda.synchronize()
        t_prefill = time.perf_counter() - t0
        tokens, step_logits = [], [logits]
        t0 = time.perf_counter()
        for step in range(new_tokens):
            nxt = logits.float().argmax(-1, keepdim=True)
            tokens.append(nxt)
            if step + 1 < new_tokens:
                logits = model(nxt, cache=cache)[:, -1]
                step_logits.append(logits)
        torch.cuda.synchronize()
        t_decode = time.perf_counter() - t0
        generated = torch.cat(tokens, dim=1)
        cached = torch.stack(step_logits, dim=1).float()
        assert torch.isfinite(cached).all()
        # The cached path against one full bf16 forward over prompt + generated tokens (but the last).
        full = model(torch.cat([ids, generated[:, :-1]], dim=1), num_logits_to_keep=new_tokens).float()
    agree = (full.argmax(-1) == generated).float().mean().item()
    err = rel_err(cached, full)
    record(
        prefill_tokens=prompt_len,
        prefill_s=t_prefill,
        prefill_tokens_per_s=prompt_len / t_prefill,
        decode_steps=new_tokens,
        decode_s=t_decode,
        decode_ms_per_token=1000 * t_decode / new_tokens,
        kv_cache_mib=cache.nbytes() / 2**20,
        peak_memory_gib=torch.cuda.max_memory_allocated() / 2**30,
        greedy_cached_vs_full_argmax_agreement=agree,
        cached_vs_full_logits_rel_err=err,
        distinct_generated_tokens=len(set(generated[0].tolist())),
    )
    assert cache.length == prompt_len + new_tokens - 1
    # bf16: one long pass and many short ones round differently (and may flip a near-tied
    # routing choice); a wrong cache state gives errors of order 1.
    assert err < 5e-2
    assert agree > 0.5
