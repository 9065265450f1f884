"""The engine on one GPU (Triton kernels, with and without CUDA graphs) against the PyTorch path.

Greedy tokens of `Engine.generate` are compared with `model.generate` on the same model: the tiny
config in fp32 and bf16, and the 8B config at random bf16 weights. Two bf16 implementations round
differently, so a greedy run may leave the other at a near-tie; each run is compared up to its
first divergence, and there the PyTorch path's own logits (one full forward over the common
prefix) must rate the two candidate tokens as nearly equal: |logit[a] - logit[b]| below a small
fraction of the logits' standard deviation. Margins and agreement are recorded to
$ZAYA_ENGINE_GPU_RESULTS (JSON) when it is set. Skipped without CUDA.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from model import SamplingParams, Zaya1Config, Zaya1ForCausalLM, generate, randomize_
from model.engine import Engine, EngineConfig
from model.tiny import build_tiny

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

RESULTS: dict[str, object] = {}
NEW_TOKENS = 64
# |logit gap| / logits std at a divergence: fp32 differences are ~1e-6 relative, bf16 ~1e-2.
TOLERANCE = {torch.float32: 1e-3, torch.bfloat16: 0.05}


def record(**values: object) -> None:
    RESULTS.update(values)
    path = os.environ.get("ZAYA_ENGINE_GPU_RESULTS")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(RESULTS, f, indent=2, sort_keys=True)
    print(values)


def divergences(model: Zaya1ForCausalLM, prompts: list[list[int]], ours: list[list[int]],
                theirs: list[list[int]]) -> list[dict[str, float]]:
    """Per prompt: tokens agreeing before the first difference and, if any, the logit gap there."""
    out = []
    for prompt, a, b in zip(prompts, ours, theirs):
        n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        row: dict[str, float] = {"agree": n, "of": len(b)}
        if n < min(len(a), len(b)):
            ids = torch.tensor([prompt + b[:n]], device=model.device)
            with torch.inference_mode():
                logits = model(ids, num_logits_to_keep=1)[0, -1].float()
            gap = (logits[a[n]] - logits[b[n]]).abs().item()
            row.update(gap=gap, gap_over_std=gap / logits.std().item())
        out.append(row)
    return out


def check(name: str, model: Zaya1ForCausalLM, prompts: list[list[int]], config: EngineConfig) -> None:
    params = SamplingParams(max_new_tokens=NEW_TOKENS, stop_token_ids=())
    expect = [c.token_ids for c in generate(model, prompts, params)]
    engine = Engine(model, config)
    got = [c.token_ids for c in engine.generate(prompts, params)]
    rows = divergences(model, prompts, got, expect)
    record(**{name: {"runs": rows, "engine_stats": engine.stats(), "graphs": engine.graphs is not None}})
    assert all(len(g) == NEW_TOKENS for g in got)
    tol = TOLERANCE[model.dtype]
    for r in rows:
        if "gap" in r:
            assert r["gap_over_std"] < tol, f"{name}: diverged at token {r['agree']} with a clear margin: {r}"
    assert engine.cache.pages.num_free == engine.cache.pages.capacity


TINY_PROMPTS = [[2, 10, 11, 12, 13], [2, 50], [2, 7, 8, 9, 20, 30, 40, 50, 60, 70, 80], [2] + list(range(100, 140))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "graphs"])
def test_tiny_engine_greedy_follows_generate_on_cuda(dtype: torch.dtype, graphs: bool) -> None:
    torch.backends.cudnn.allow_tf32 = False  # the PyTorch path's CCA convolutions in true fp32
    torch.backends.cuda.matmul.allow_tf32 = False
    model = build_tiny().cuda().to_dtype(dtype)
    # Small pages and budget: sequences span many pages, the 41-token prompt is chunked.
    config = EngineConfig(max_batch_size=4, max_num_tokens=16, page_size=4, max_model_len=128, cuda_graphs=graphs)
    check(f"tiny_{str(dtype)[6:]}_{'graphs' if graphs else 'eager'}", model, TINY_PROMPTS, config)


@pytest.fixture(scope="module")
def model_8b() -> Zaya1ForCausalLM:
    config = Zaya1Config.named("zaya1-8b")
    with torch.device("meta"):
        model = Zaya1ForCausalLM(config)
    model.materialize_("cuda", torch.bfloat16)
    return randomize_(model, seed=0, skip_bias=0.0).eval()


@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "graphs"])
def test_8b_bf16_engine_greedy_follows_generate(model_8b: Zaya1ForCausalLM, graphs: bool) -> None:
    gen = torch.Generator().manual_seed(5)
    prompts = [torch.randint(8, model_8b.config.vocab_size, (n,), generator=gen).tolist() for n in (7, 61, 300)]
    # A 256-token budget splits the 300-token prompt: the prefill over cached pages runs on GPU too.
    config = EngineConfig(max_batch_size=4, max_num_tokens=256, page_size=16, max_model_len=512, cuda_graphs=graphs)
    check(f"8b_bf16_{'graphs' if graphs else 'eager'}", model_8b, prompts, config)
