"""The batched inference engine: requests in, completions out, one scheduler step at a time.

    engine = Engine(model, EngineConfig(max_batch_size=64), decode=tokenizer.decode)
    completions = engine.generate(prompts, SamplingParams(max_new_tokens=256, temperature=0.8, seed=1), n=4)

or, driving it yourself (requests may arrive while others run):

    rid = engine.add_request(prompt_ids, params)
    while engine.has_work:
        for request_id, completion in engine.step():
            ...

A step: the scheduler picks decoders and prefill chunks (see scheduler.py), the runner does
one packed prefill forward and one decode forward (a CUDA graph when available), the sampler
draws every row's token on the device, and the host appends tokens and applies the stop rules
of `model.generate` (stop tokens, stop strings, max_new_tokens, finish reasons).

Decode steps overlap the host with the device: a step launches its decode forward and sampler
with the previous step's sampled tokens still on the device (they are the new input ids,
copied on the device), and only then reads those tokens back and applies the stop rules, so
the host's bookkeeping runs while the GPU computes instead of between its steps. A sequence
that stopped at step k on a stop token or string is therefore computed once more at step k+1,
and that row is dropped.
The tokens, and so the completions, are those of a synchronous engine: each row's inputs,
positions and noise steps are the same. The host catches up before scheduling (no overlap)
whenever the next schedule could preempt (too few free pages for every decoder to take one),
since a preempted sequence's recompute needs all its tokens on the host. A sequence whose
token in flight ends it by length (max_new_tokens, max_model_len) is not scheduled again:
only stop tokens and stop strings, which depend on the token's value, cost the extra row.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence as Seq
from dataclasses import dataclass

import torch

from model.generate import Completion, SamplingParams
from model.zaya1 import Zaya1ForCausalLM

from .backend import select_ops
from .graphs import DecodeGraphs, decode_inputs, default_buckets
from .pages import SCRATCH, PagedCache
from .runner import ModelRunner, PrefillInputs
from .sampler import SamplingBatch, sample
from .scheduler import Scheduler, StepPlan, cdiv
from .sequence import Sequence, Status, check_stop, completion
from .transfer import copy_to_device, to_device


@dataclass(frozen=True)
class EngineConfig:
    max_batch_size: int = 64  # live sequences (decoding, prefilling or waiting to fork)
    max_num_tokens: int = 2048  # tokens per step: one per decoder, the rest for prefill chunks
    page_size: int = 16  # tokens per K/V page
    num_pages: int | None = None  # None: enough for max_batch_size full-length sequences, or
    #                               what `memory_fraction` of the free GPU memory holds if less
    memory_fraction: float = 0.85
    max_model_len: int | None = None  # None: min(max_position_embeddings, 32768)
    cuda_graphs: bool = True  # decode through CUDA graphs on CUDA (ignored elsewhere)
    graph_buckets: tuple[int, ...] | None = None  # None: default_buckets(max_batch_size)
    backend: str = "auto"  # "auto" (Triton on GPU, PyTorch on CPU), "triton" or "torch"
    overlap: bool = True  # apply a decode step's tokens on the host while the next step runs

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_num_tokens", "page_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not 0.0 < self.memory_fraction <= 1.0:
            raise ValueError(f"memory_fraction={self.memory_fraction} must be in (0, 1]")


RequestOutput = tuple[int, Completion]


@dataclass
class _InFlight:
    """A decode step's sampled tokens, not yet applied on the host."""

    seqs: list[Sequence]
    tokens: torch.Tensor  # [n] int64 on the device: the next step's input ids
    host: torch.Tensor  # [n] int64 on the host (pinned on CUDA), filled by an async copy
    ready: torch.cuda.Event | None  # recorded after that copy (None off CUDA)
    rows: dict[int, int]  # request id -> row


class Engine:
    def __init__(self, model: Zaya1ForCausalLM, config: EngineConfig = EngineConfig(), *,
                 decode: Callable[[list[int]], str] | None = None) -> None:
        self.model = model.eval()
        self.config = config
        self.decode_text = decode
        mc = model.config
        self.device = model.device
        self.max_model_len = config.max_model_len or min(mc.max_position_embeddings, 32768)
        max_pages_per_seq = cdiv(self.max_model_len, config.page_size)
        num_slots = config.max_batch_size + 1  # + the scratch slot
        num_pages = config.num_pages or self._auto_pages(max_pages_per_seq)
        if num_pages - 1 < max_pages_per_seq:
            raise ValueError(f"num_pages={num_pages} cannot hold one sequence of max_model_len={self.max_model_len} "
                             f"({max_pages_per_seq} pages of {config.page_size} + the scratch page)")
        with torch.inference_mode():
            self.cache = PagedCache(mc, num_pages, config.page_size, num_slots, max_pages_per_seq,
                                    device=self.device, dtype=model.dtype)
            self.ops = select_ops(config.backend, self.device)
            self.runner = ModelRunner(model, self.cache, self.ops)
        self.scheduler = Scheduler(self.cache, config.max_batch_size, config.max_num_tokens)
        self._seqs: dict[int, Sequence] = {}
        self._next_id = 0
        self._done: list[RequestOutput] = []
        self.steps = 0
        self.prefill_tokens = 0  # tokens run through prefill (a shared prompt counts once)
        self.decode_tokens = 0
        self._in_flight: _InFlight | None = None
        # two pinned landing buffers for the sampled tokens: one may still be read by the host
        # (the previous step) while the device copies the current step's tokens into the other
        pin = self.device.type == "cuda"
        self._landing = [torch.empty(config.max_batch_size, dtype=torch.int64, pin_memory=pin) for _ in range(2)]
        self.graphs: DecodeGraphs | None = None
        if config.cuda_graphs and self.device.type == "cuda":
            buckets = config.graph_buckets or default_buckets(config.max_batch_size)
            self.graphs = DecodeGraphs(self.runner, buckets, lambda b: self._splits(b, self.max_model_len),
                                       scratch_row=[0, 0, SCRATCH, 1])
            self.graphs.capture()

    def _auto_pages(self, max_pages_per_seq: int) -> int:
        want = self.config.max_batch_size * max_pages_per_seq + 1
        if self.device.type != "cuda":
            return want
        mc = self.model.config
        itemsize = torch.empty((), dtype=self.model.dtype).element_size()
        page_bytes = 2 * mc.num_hidden_layers * self.config.page_size * mc.num_key_value_heads * mc.head_dim * itemsize
        free, _ = torch.cuda.mem_get_info(self.device)
        # Leave room for activations and graphs: the fraction applies to what is free now.
        return max(2, min(want, int(free * self.config.memory_fraction) // page_bytes))

    def _splits(self, batch: int, max_len: int) -> dict[int | None, int | None]:
        hk = self.model.config.num_key_value_heads
        windows = {lw.sliding_window for lw in self.runner.layers}
        return {w: self.ops.decode_splits(batch, hk, min(max_len, w) if w else max_len, self.device) for w in windows}

    # ---- requests -----------------------------------------------------------------------------
    def add_request(self, prompt: Seq[int], params: SamplingParams = SamplingParams(), *,
                    seed: int | None = None) -> int:
        """Queue a request; returns its id. `seed` overrides params.seed (the noise seed of this request)."""
        prompt = [int(t) for t in prompt]
        if not prompt:
            raise ValueError("the prompt is empty; a prompt needs at least one token (e.g. bos)")
        if len(prompt) >= self.max_model_len:
            raise ValueError(f"a prompt of {len(prompt)} tokens leaves no room in max_model_len={self.max_model_len}")
        if params.stop_strings and self.decode_text is None:
            raise ValueError("stop_strings need a decode callback (token ids -> text)")
        if seed is None:
            seed = params.seed if params.seed is not None else random.getrandbits(63)
        stops = self.model.config.eos_token_ids if params.stop_token_ids is None else params.stop_token_ids
        rid = self._next_id
        self._next_id += 1
        seq = Sequence(rid, prompt, params, seed, frozenset(stops), arrival=rid)
        if params.max_new_tokens == 0:
            seq.status, seq.finish_reason = Status.FINISHED, "length"
            self._done.append((rid, completion(seq, self.decode_text, params.stop_strings)))
        else:
            self._seqs[rid] = seq
            self.scheduler.add(seq)
        return rid

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work or bool(self._done)

    def abort(self, request_id: int) -> bool:
        """Drop a queued or running request (its pages and slot return to the pool); False if unknown."""
        seq = self._seqs.pop(request_id, None)
        if seq is None:
            return False
        self.scheduler.abort(seq)
        return True

    def generate(self, prompts: Seq[Seq[int]], params: SamplingParams | Seq[SamplingParams] = SamplingParams(),
                 *, n: int = 1, decode: Callable[[list[int]], str] | None = None) -> list[Completion]:
        """Complete every prompt `n` times; returns len(prompts) * n completions, prompt-major.

        Like `model.generate`, row r (= prompt index * n + rollout) draws with seed params.seed + r,
        so a row's tokens do not depend on the other rows; the n rollouts of a prompt share its prefill.
        """
        if decode is not None:
            self.decode_text = decode
        if n < 1:
            raise ValueError(f"n={n} must be >= 1")
        per_prompt = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
        if len(per_prompt) != len(prompts):
            raise ValueError(f"{len(per_prompt)} SamplingParams for {len(prompts)} prompts")
        ids = []
        for i, (prompt, p) in enumerate(zip(prompts, per_prompt)):
            for j in range(n):
                row = i * n + j
                ids.append(self.add_request(prompt, p, seed=None if p.seed is None else p.seed + row))
        results: dict[int, Completion] = {}
        wanted = set(ids)
        while len(results) < len(ids):
            for rid, c in self.step():
                if rid in wanted:
                    results[rid] = c
        return [results[r] for r in ids]

    # ---- one step -----------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> list[RequestOutput]:
        """Run one scheduler step; returns the requests that finished in it (id, Completion).

        A request's last token is read back one step after it was sampled (see the module
        docstring), so it finishes in the step after the one that computed its last token."""
        finished, self._done = self._done, []
        if self._in_flight is not None and not self._can_overlap():
            self._apply(self._take_in_flight(), finished)
        plan = self.scheduler.schedule()
        if plan.empty:
            if self._in_flight is not None:
                self._apply(self._take_in_flight(), finished)
            return finished
        self.cache.flush()
        self.steps += 1
        sampled: list[tuple[Sequence, int]] = []
        if plan.prefill:
            sampled += self._prefill(plan)
        previous = self._take_in_flight()
        if plan.decode:
            self._in_flight = self._launch_decode(plan.decode, previous)
        if previous is not None:
            self._apply(previous, finished)
        for seq, tok in sampled:
            self._append(seq, tok, finished)
        if not self.config.overlap and self._in_flight is not None:
            self._apply(self._take_in_flight(), finished)
        return finished

    def _can_overlap(self) -> bool:
        """True when the next schedule cannot preempt: every decoder can take a fresh page."""
        running = sum(1 for s in self.scheduler.active if s.status is Status.RUNNING)
        return self.cache.pages.num_free >= running

    def _take_in_flight(self) -> _InFlight | None:
        flight, self._in_flight = self._in_flight, None
        return flight

    def _apply(self, flight: _InFlight, finished: list[RequestOutput]) -> None:
        """Read a decode step's tokens back and apply them (rows of sequences that finished or
        were aborted since that step was launched are dropped)."""
        if flight.ready is not None:
            flight.ready.synchronize()
        for seq, tok in zip(flight.seqs, flight.host.tolist()):
            if seq.status is Status.RUNNING:
                self.decode_tokens += 1
                self._append(seq, tok, finished)

    def _append(self, seq: Sequence, tok: int, finished: list[RequestOutput]) -> None:
        seq.output.append(tok)
        if check_stop(seq, self.decode_text, self.max_model_len):
            self.scheduler.finish(seq)
            del self._seqs[seq.request_id]
            finished.append((seq.request_id, completion(seq, self.decode_text, seq.params.stop_strings)))

    def _prefill(self, plan: StepPlan) -> list[tuple[Sequence, int]]:
        inp, completing = self._prefill_inputs(plan.prefill)
        self.prefill_tokens += inp.ids.shape[0]
        logits = self.runner.prefill(inp)
        rows: list[tuple[Sequence, int]] = []  # (sequence to sample for, logits row)
        for seq, chunk in plan.prefill:
            seq.num_computed += chunk
        for row, seq in enumerate(completing):
            group = [seq] + self.scheduler.fork(seq)
            for s in group:
                s.status = Status.RUNNING
            if not seq.output:  # a recompute already knows its next input token
                rows += [(s, row) for s in group]
        if not rows:
            return []
        return self._sample(logits[[r for _, r in rows]], [s for s, _ in rows])

    def _launch_decode(self, seqs: list[Sequence], previous: _InFlight | None) -> _InFlight:
        """Launch one decode forward and the sampler; the tokens stay on the device (read back
        by `_apply` in the next step). Rows whose input is a token of `previous` take it there."""
        pending = previous.rows if previous is not None else {}
        n = len(seqs)
        host = torch.tensor([[0 if s.request_id in pending else s.last_token for s in seqs],
                             [s.num_computed for s in seqs], [s.slot for s in seqs],
                             [s.num_computed + 1 for s in seqs]], dtype=torch.int64)
        bucket = self.graphs.bucket_for(n) if self.graphs is not None else None
        if bucket is not None:
            inputs = self.graphs.inputs(bucket)
            copy_to_device(inputs, self.graphs.pad(host, bucket))
        else:
            inputs = to_device(host, self.device)
        if previous is not None:
            self._carry_tokens(inputs, seqs, previous)
        if bucket is not None:
            logits = self.graphs.replay(bucket)[:n]
        else:
            splits = self._splits(n, max(s.num_computed + 1 for s in seqs))
            logits = self.runner.decode(decode_inputs(inputs), splits)
        for s in seqs:
            s.num_computed += 1
        # the noise step of a row is its index in the completion, counting the token in flight
        steps = [len(s.output) + (s.request_id in pending) for s in seqs]
        for s, k in zip(seqs, steps):
            # the token drawn now is the completion's (k+1)-th: if that ends it by length, the
            # sequence is done whatever the token is, so the next step does not compute it again
            s.last_in_flight = k + 1 >= s.params.max_new_tokens or len(s.prompt) + k + 1 >= self.max_model_len
        tokens = self._draw(logits, seqs, steps)
        host_tokens = self._landing[self.steps % 2][:n]
        ready = None
        if tokens.is_cuda:
            host_tokens.copy_(tokens, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
        else:
            host_tokens.copy_(tokens)
        return _InFlight(seqs, tokens, host_tokens, ready, {s.request_id: i for i, s in enumerate(seqs)})

    @staticmethod
    def _carry_tokens(inputs: torch.Tensor, seqs: list[Sequence], previous: _InFlight) -> None:
        """Input ids of the rows continuing from `previous`, copied on the device."""
        if previous.seqs == seqs:  # the steady state: the same sequences in the same rows
            inputs[0, : len(seqs)].copy_(previous.tokens)
            return
        dst, src = [], []
        for i, s in enumerate(seqs):
            row = previous.rows.get(s.request_id)
            if row is not None:
                dst.append(i)
                src.append(row)
        if not dst:
            return
        index = to_device(torch.tensor([dst, src], dtype=torch.int64), inputs.device)
        inputs[0, index[0]] = previous.tokens[index[1]]

    def _draw(self, logits: torch.Tensor, seqs: list[Sequence], steps: list[int]) -> torch.Tensor:
        batch = SamplingBatch.build(
            [s.params.temperature for s in seqs], [s.params.top_p for s in seqs], [s.params.top_k for s in seqs],
            [s.seed for s in seqs], steps, self.device,
        )
        return sample(logits, batch)

    def _sample(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[tuple[Sequence, int]]:
        return list(zip(seqs, self._draw(logits, seqs, [len(s.output) for s in seqs]).tolist()))

    def _prefill_inputs(self, chunks: list[tuple[Sequence, int]]) -> tuple[PrefillInputs, list[Sequence]]:
        """Host-side index arithmetic of a packed prefill batch (see PrefillInputs for the layout)."""
        page = self.cache.page_size
        b = len(chunks)
        ids: list[int] = []
        positions: list[int] = []
        write_idx: list[int] = []
        cu = [0]
        prev2: list[int] = []
        prev1: list[int] = []
        last2: list[int] = []
        last1: list[int] = []
        vprev: list[int] = []
        vlast: list[int] = []
        logit_rows: list[int] = []
        completing: list[Sequence] = []
        gather: list[int] = []
        cu_k = [0]
        has_prefix = any(seq.num_computed > 0 for seq, _ in chunks)
        zero, s0, s1, q = 0, 1, 1 + b, 1 + 2 * b  # offsets into the conv source rows
        for i, (seq, n) in enumerate(chunks):
            start = seq.num_computed
            tokens = seq.tokens
            base = cu[-1]
            cont = start > 0
            for j in range(n):
                p = start + j
                r = base + j
                ids.append(tokens[p])
                positions.append(p)
                write_idx.append(seq.pages[p // page] * page + p % page)
                if j >= 2:
                    prev2.append(q + r - 2)
                elif j == 1:
                    prev2.append(s1 + i if cont else zero)
                else:
                    prev2.append(s0 + i if cont else zero)
                prev1.append(q + r - 1 if j >= 1 else (s1 + i if cont else zero))
                vprev.append(1 + b + r - 1 if j >= 1 else (1 + i if cont else 0))
            r_last = base + n - 1
            last1.append(q + r_last)
            last2.append(q + r_last - 1 if n >= 2 else (s1 + i if cont else zero))
            vlast.append(r_last)
            cu.append(base + n)
            if start + n == seq.prefill_target:
                completing.append(seq)
                logit_rows.append(r_last)
            if has_prefix:
                end = start + n
                gather.extend(seq.pages[t // page] * page + t % page for t in range(end))
                cu_k.append(cu_k[-1] + end)
        dev = self.device

        def t(values: list[int], dtype: torch.dtype = torch.int64) -> torch.Tensor:
            return to_device(torch.tensor(values, dtype=dtype), dev)

        inp = PrefillInputs(
            ids=t(ids), positions=t(positions), write_idx=t(write_idx), cu_q=t(cu, torch.int32),
            max_q=max(n for _, n in chunks), slots=t([seq.slot for seq, _ in chunks]),
            conv_prev2=t(prev2), conv_prev1=t(prev1), conv_last2=t(last2), conv_last1=t(last1),
            value_prev=t(vprev), value_last=t(vlast), logit_rows=t(logit_rows),
            kv_gather=t(gather) if has_prefix else None, cu_k=t(cu_k, torch.int32) if has_prefix else None,
        )
        return inp, completing

    # ---- introspection ------------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        return {
            "steps": self.steps,
            "prefill_tokens": self.prefill_tokens,
            "decode_tokens": self.decode_tokens,
            "pages_total": self.cache.pages.capacity,
            "pages_free": self.cache.pages.num_free,
            "slots_free": self.cache.slots.num_free,
            "waiting": len(self.scheduler.waiting),
            "active": len(self.scheduler.active),
            "preemptions": self.scheduler.num_preemptions,
        }
