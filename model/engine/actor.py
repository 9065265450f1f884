"""The engine as a Ray actor (one GPU each), and a pool that spreads prompts over several.

    from model.engine.actor import EngineActor, EnginePool
    pool = EnginePool(functools.partial(load_model, "ZAYA1-8B/", device="cuda", dtype=torch.bfloat16),
                      num_actors=8, config=EngineConfig(max_batch_size=256))
    completions = pool.generate(prompts, SamplingParams(max_new_tokens=1024, temperature=0.8, seed=1), n=8)

Ray is imported only when an actor class is made, so the engine works without it. The model
is built inside the actor from a picklable factory, never shipped. Seeds stay global: the
chunk starting at prompt a runs with seed + a * n, so row r draws with seed + r whichever actor
serves it, and the tokens do not depend on the number of actors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from model.generate import Completion, SamplingParams

from .engine import Engine, EngineConfig


class EngineWorker:
    """Body of the actor: one Engine in this process."""

    def __init__(self, model_factory: Callable[[], Any], config: EngineConfig = EngineConfig(),
                 decode_factory: Callable[[], Callable[[list[int]], str]] | None = None) -> None:
        self.engine = Engine(model_factory(), config, decode=decode_factory() if decode_factory else None)

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams, n: int = 1) -> list[Completion]:
        return self.engine.generate(prompts, params, n=n)

    def stats(self) -> dict[str, int]:
        return self.engine.stats()


def engine_actor_class(num_gpus: float = 1) -> Any:
    """`EngineWorker` as a Ray actor class holding `num_gpus` GPUs (0 only to test on a CPU)."""
    import ray

    return ray.remote(num_gpus=num_gpus)(EngineWorker)


def __getattr__(name: str) -> Any:
    # `EngineActor` is built on first access so importing this module never needs Ray.
    if name == "EngineActor":
        return engine_actor_class(1)
    raise AttributeError(name)


class GpuActorPool:
    """`num_actors` Ray actors of `body` (a plain class), each holding `num_gpus` GPUs (0
    only to test on a CPU). Starts Ray if this process has not, and then also stops it.
    `map_spans` runs spans on whichever actor is free and returns their results in span
    order, whatever order they finish in, so results never depend on the number of actors."""

    def __init__(self, body: type, args: tuple, num_actors: int, *, num_gpus: float = 1,
                 ray_address: str | None = None) -> None:
        import ray

        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(address=ray_address, ignore_reinit_error=True, log_to_driver=False)
        cls = ray.remote(num_gpus=num_gpus)(body)
        self.actors = [cls.remote(*args) for _ in range(num_actors)]

    def map_spans(self, num_spans: int, submit: Callable[[Any, int], Any],
                  on_result: Callable[[int, Any], None] | None = None) -> list[Any]:
        """`submit(actor, span)` returns a Ray object ref; `on_result(span, result)` is called
        as each one arrives (progress, streaming writes)."""
        import ray

        results: list[Any] = [None] * num_spans
        pending: dict[Any, tuple[int, int]] = {}  # ref -> (span, actor index)
        free = list(range(len(self.actors)))
        nxt = 0
        while nxt < num_spans or pending:
            while free and nxt < num_spans:
                actor = free.pop(0)
                pending[submit(self.actors[actor], nxt)] = (nxt, actor)
                nxt += 1
            ready, _ = ray.wait(list(pending), num_returns=1)
            span, actor = pending.pop(ready[0])
            results[span] = ray.get(ready[0])
            free.append(actor)
            if on_result is not None:
                on_result(span, results[span])
        return results

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []
        if self._owns_ray:
            ray.shutdown()


class EnginePool(GpuActorPool):
    """`num_actors` EngineActors; prompts go out in chunks to whichever actor is free."""

    def __init__(self, model_factory: Callable[[], Any], num_actors: int, config: EngineConfig = EngineConfig(),
                 decode_factory: Callable[[], Callable[[list[int]], str]] | None = None, *,
                 num_gpus: float = 1, ray_address: str | None = None) -> None:
        super().__init__(EngineWorker, (model_factory, config, decode_factory), num_actors,
                         num_gpus=num_gpus, ray_address=ray_address)

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams, n: int = 1,
                 chunk_prompts: int = 64) -> list[Completion]:
        spans = [(a, min(len(prompts), a + chunk_prompts)) for a in range(0, len(prompts), chunk_prompts)]

        def submit(actor: Any, span: int) -> Any:
            a, b = spans[span]
            p = params if params.seed is None else dataclasses.replace(params, seed=params.seed + a * n)
            return actor.generate.remote(list(prompts[a:b]), p, n)

        return [c for part in self.map_spans(len(spans), submit) for c in part]
