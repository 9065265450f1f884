"""The packaged ZAYA1 model as a teacher: in this process, or as a pool of Ray GPU actors.

Prompts are wrapped in the chat template (the user turn, then the assistant turn opens),
encoded with the run's tokenizer (template markers as special tokens, the prompt's own
text as plain text, so a candidate quoting "<|im_end|>" cannot close the turn) and
generated in fixed chunks of `batch_size` requests. A chunk's sampling seed is its first
request's seed (`model.generate` seeds row i with seed + i), and chunks are cut before
they are spread over actors, so the tokens drawn never depend on how many GPUs serve
the run.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from zaya_data.rsa.teachers import Generation, GenerationRequest, Sampling

USER_TEMPLATE = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(n, i + size)) for i in range(0, n, size)]


def random_model(name: str, device: str, dtype: Any, seed: int = 0) -> Any:
    """A shipped configuration at random weights (the tiny model's deterministic
    randomisation, which keeps activations finite), allocated directly on `device`:
    throughput benchmarks only."""
    import torch

    from model.config import Zaya1Config
    from model.tiny import randomize_
    from model.zaya1 import Zaya1ForCausalLM

    with torch.device(device):
        model = Zaya1ForCausalLM(Zaya1Config.named(name))
    return randomize_(model, seed).to_dtype(dtype).eval()


class LocalModelTeacher:
    """ZAYA1 on one device in this process (`checkpoint: tiny` builds the seeded tiny model)."""

    def __init__(self, model: Any, tokenizer: Any, label: str, batch_size: int = 16, engine: str = "auto"):
        self.model = model
        self.tok = tokenizer  # a zaya_data.tokenizer.LoadedTokenizer
        self.name = label
        self.batch_size = batch_size
        prefix, suffix = USER_TEMPLATE.split("{prompt}")
        self._prefix = ([tokenizer.bos_id] if tokenizer.bos_id is not None else []) + \
            tokenizer.tokenizer.encode(prefix, add_special_tokens=False).ids
        self._suffix = tokenizer.tokenizer.encode(suffix, add_special_tokens=False).ids
        ctx = getattr(model.config, "max_position_embeddings", None)
        self.max_positions: int | None = int(ctx) if ctx else None
        self.engine: Any = None
        if engine == "on" or (engine == "auto" and str(model.device).startswith("cuda")):
            from model.engine import Engine, EngineConfig

            # One chunk is the engine's whole batch: continuous batching inside it, and the
            # chunking above it keeps the draws independent of the number of GPUs.
            self.engine = Engine(model, EngineConfig(max_batch_size=batch_size), decode=self._decode)
            self.max_positions = self.engine.max_model_len

    @classmethod
    def from_spec(cls, spec: Any, tokenizer: Any) -> "LocalModelTeacher":
        import torch

        device = spec.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if spec.dtype == "auto":
            dtype = torch.bfloat16 if device == "cuda" else torch.float32
        else:
            dtype = getattr(torch, spec.dtype)
        if spec.checkpoint == "tiny":
            from model.tiny import load_tiny

            model, _ = load_tiny(device=device, dtype=dtype)
        elif spec.checkpoint.startswith("random:"):
            model = random_model(spec.checkpoint[len("random:"):], device, dtype)
        else:
            from model.loading import load_model

            model = load_model(spec.checkpoint, device=device, dtype=dtype)
        return cls(model, tokenizer, spec.label, spec.batch_size, spec.engine)

    def encode(self, prompt: str) -> list[int]:
        return self._prefix + self.tok.text_tokenizer.encode(prompt, add_special_tokens=False).ids + self._suffix

    def _decode(self, ids: list[int]) -> str:
        return self.tok.tokenizer.decode(ids, skip_special_tokens=False)

    def generate_chunk(self, prompts: Sequence[str], seed: int, sampling: Sampling) -> list[Generation]:
        from model.generate import SamplingParams, generate

        encoded = [self.encode(p) for p in prompts]
        max_new = sampling.max_tokens
        out: list[Generation | None] = [None] * len(prompts)
        fit = []
        for i, ids in enumerate(encoded):
            # A prompt the model cannot hold is this request's fault, not the teacher's.
            if self.max_positions is not None and len(ids) + 1 > self.max_positions:
                out[i] = Generation("", "error", 0, error=f"prompt of {len(ids)} tokens exceeds the model's "
                                                          f"{self.max_positions} positions")
            else:
                fit.append(i)
        if fit:
            if self.max_positions is not None:
                max_new = min(max_new, self.max_positions - max(len(encoded[i]) for i in fit))
            params = SamplingParams(max_new_tokens=max_new, temperature=sampling.temperature, top_p=sampling.top_p,
                                    top_k=sampling.top_k or 0, seed=seed, stop_strings=tuple(sampling.stop))
            if self.engine is not None:
                done = self.engine.generate([encoded[i] for i in fit], params)
            else:
                done = generate(self.model, [encoded[i] for i in fit], params, decode=self._decode,
                                pad_token_id=self.tok.pad_id)
            for i, c in zip(fit, done):
                out[i] = Generation(c.text or "", c.finish_reason, c.completion_tokens)
        return [g for g in out if g is not None]

    def generate(self, requests: Sequence[GenerationRequest], sampling: Sampling,
                 on_done: Callable[[Generation], None] | None = None) -> list[Generation]:
        out: list[Generation] = []
        for a, b in chunks(len(requests), self.batch_size):
            gens = self.generate_chunk([r.prompt for r in requests[a:b]], requests[a].seed, sampling)
            for g in gens:
                if on_done is not None:
                    on_done(g)
            out.extend(gens)
        return out

    def close(self) -> None:
        pass


class _ModelActor:
    """Body of a Ray actor holding one model on its GPU."""

    def __init__(self, spec: Any, tokenizer_path: str):
        from zaya_data.tokenizer import load_tokenizer

        self.teacher = LocalModelTeacher.from_spec(spec, load_tokenizer(tokenizer_path))

    def generate_chunk(self, prompts: list[str], seed: int, sampling: Sampling) -> list[Generation]:
        return self.teacher.generate_chunk(prompts, seed, sampling)


class RayModelPool:
    """`num_actors` Ray actors with one GPU each; fixed-size chunks are dispatched to the
    least-loaded actor as results come back and gathered in request order."""

    def __init__(self, spec: Any, num_actors: int, tokenizer_path: str = "embedded",
                 ray_address: str | None = None, num_gpus: float = 1):
        from model.engine.actor import GpuActorPool  # imports torch: only once a pool is made

        # num_gpus=0 only to exercise the pool on a CPU machine (the tiny model)
        self.pool = GpuActorPool(_ModelActor, (spec, tokenizer_path), num_actors, num_gpus=num_gpus,
                                ray_address=ray_address)
        self.batch_size = spec.batch_size
        self.name = spec.label

    def generate(self, requests: Sequence[GenerationRequest], sampling: Sampling,
                 on_done: Callable[[Generation], None] | None = None) -> list[Generation]:
        spans = chunks(len(requests), self.batch_size)

        def submit(actor: Any, span: int) -> Any:
            a, b = spans[span]
            return actor.generate_chunk.remote([r.prompt for r in requests[a:b]], requests[a].seed, sampling)

        def done(span: int, gens: list[Generation]) -> None:
            for g in gens:
                on_done(g)  # type: ignore[misc]  # only passed when on_done is set

        results = self.pool.map_spans(len(spans), submit, done if on_done is not None else None)
        return [g for part in results for g in part]

    def close(self) -> None:
        self.pool.close()
