"""The engine behind Ray actors: a pool of two (CPU, num_gpus=0) reproduces the in-process engine."""

from __future__ import annotations

import functools

import pytest

from model import SamplingParams
from model.engine import Engine, EngineConfig
from model.engine.actor import EnginePool
from model.tiny import build_tiny

ray = pytest.importorskip("ray")

CONFIG = EngineConfig(max_batch_size=4, max_num_tokens=32, page_size=4, max_model_len=64)


def test_a_pool_of_two_actors_reproduces_the_in_process_engine_in_order() -> None:
    prompts = [[2, 10, 11, 12, 13], [2, 50], [2, 7, 8, 9, 20], [2, 99, 98]]
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=3, stop_token_ids=())
    expect = Engine(build_tiny(), CONFIG).generate(prompts, params, n=2)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        pool = EnginePool(functools.partial(build_tiny), num_actors=2, config=CONFIG, num_gpus=0)
        # One prompt per chunk: chunks land on both actors, with seeds offset by their first row.
        got = pool.generate(prompts, params, n=2, chunk_prompts=1)
        pool.close()
    finally:
        ray.shutdown()
    assert [c.token_ids for c in got] == [c.token_ids for c in expect]
    assert len(got) == 8
