"""Batched inference engine for ZAYA1: continuous batching over a paged compressed-KV cache.

    from model.engine import Engine, EngineConfig
    engine = Engine(model, EngineConfig(max_batch_size=64), decode=tokenizer.decode)
    completions = engine.generate(prompts, SamplingParams(max_new_tokens=256, temperature=0.8, seed=1), n=4)

One concern per module: backend (Triton kernels or PyTorch references), pages (page pool,
state slots, device storage), sequence (request state, stop rules), scheduler (continuous
batching, token budget, prefix sharing, preemption), runner (the forward pass), sampler (device
sampling with per-request seeds), graphs (CUDA graphs of the decode step), engine (the loop),
actor (a Ray actor per GPU; Ray is imported only there).
"""

from .backend import Ops, select_ops
from .engine import Engine, EngineConfig, RequestOutput
from .pages import PagedCache, PagePool, SlotPool
from .sampler import SamplingBatch, sample
from .scheduler import Scheduler

__all__ = [
    "Engine",
    "EngineConfig",
    "Ops",
    "PagePool",
    "PagedCache",
    "RequestOutput",
    "SamplingBatch",
    "Scheduler",
    "SlotPool",
    "sample",
    "select_ops",
]
