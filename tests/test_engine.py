"""The batched engine on the CPU (PyTorch reference ops) against `model.generate` on the tiny model.

Greedy tokens are compared exactly: the engine's forward is the same math in a different
arrangement (packed tokens, fused q/k/v GEMM, pages), so in fp32 the logits agree to ~1e-6 and
no argmax flips over these runs.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model import SamplingParams, generate
from model.engine import Engine, EngineConfig, SamplingBatch, sample
from model.engine.graphs import DecodeGraphs, decode_inputs
from model.engine.pages import PagePool
from model.engine.sequence import Status
from model.tiny import build_tiny
from torch_checks import one_thread  # noqa: F401 (autouse fixture)

ROOT = Path(__file__).resolve().parents[1]
# Prompts of 5, 2, 11 and 9 tokens; the tiny config's sliding layers (window 16) are crossed.
PROMPTS = [[2, 10, 11, 12, 13], [2, 50], [2, 7, 8, 9, 20, 30, 40, 50, 60, 70, 80], [2, 99, 98, 97, 96, 95, 94, 93, 92]]
NO_STOP = dict(stop_token_ids=())
GREEDY = SamplingParams(max_new_tokens=70, **NO_STOP)
# Small pages and a small budget, so sequences span many pages and long prompts are chunked.
SMALL = EngineConfig(max_batch_size=3, max_num_tokens=8, page_size=4, max_model_len=128)




def decode(ids: list[int]) -> str:
    # A toy detokenizer: token t is the two-letter piece of t in base 26 (t < 676 here... and beyond).
    return "".join(chr(97 + (t // 26) % 26) + chr(97 + t % 26) for t in ids)


@pytest.fixture(scope="module")
def model():
    return build_tiny()


@pytest.fixture(scope="module")
def reference(model):
    return generate(model, PROMPTS, GREEDY, decode=decode)


def run_with_arrivals(engine: Engine, arrivals: dict[int, list[int]], params: SamplingParams) -> dict[int, list[int]]:
    """Add PROMPTS[i] at step s for every (s, [i, ...]) in `arrivals`; tokens per prompt index."""
    ids: dict[int, int] = {}
    done: dict[int, list[int]] = {}
    step = 0
    last = max(arrivals)
    while step <= last or engine.has_work:
        for i in arrivals.get(step, []):
            ids[engine.add_request(PROMPTS[i], params)] = i
        for rid, c in engine.step():
            done[ids[rid]] = c.token_ids
        step += 1
    return done


def test_greedy_engine_equals_generate_for_prompts_arriving_at_different_steps(model, reference) -> None:
    engine = Engine(model, SMALL)
    done = run_with_arrivals(engine, {0: [0], 3: [1], 10: [2], 11: [3]}, GREEDY)
    assert [done[i] for i in range(4)] == [c.token_ids for c in reference]
    assert all(len(c.token_ids) == 70 for c in reference)
    assert min(len(set(c.token_ids)) for c in reference) >= 8  # not a degenerate repeat
    # Batch cap 3: prompt 3 waited for a free place, and every token went through the engine once.
    stats = engine.stats()
    assert stats["prefill_tokens"] == sum(len(p) for p in PROMPTS)
    assert stats["decode_tokens"] == 4 * 69


def test_pages_and_slots_all_return_to_the_pool_after_completion(model) -> None:
    engine = Engine(model, SMALL)
    pool = engine.cache.pages
    engine.add_request(PROMPTS[2], GREEDY)
    engine.add_request(PROMPTS[0], SamplingParams(max_new_tokens=9, **NO_STOP))
    engine.step()
    engine.step()
    # Prompt 2 (11 tokens) got all its 3 pages at admission; prompt 0 its 2.
    assert pool.num_free == pool.capacity - 5
    engine.generate([PROMPTS[1]] * 2, SamplingParams(max_new_tokens=5, **NO_STOP))
    while engine.has_work:
        engine.step()
    assert pool.num_free == pool.capacity == 3 * 32  # max_batch_size x 128 / 4 pages
    assert sum(pool.refcount) == 0
    assert engine.cache.slots.num_free == 3
    assert engine.stats()["active"] == engine.stats()["waiting"] == 0


def test_n_rollouts_prefill_once_share_prompt_pages_and_equal_independent_runs(model) -> None:
    params = SamplingParams(max_new_tokens=40, temperature=1.0, top_p=0.9, top_k=50, seed=5, **NO_STOP)
    prompt = PROMPTS[2]  # 11 tokens: two full pages of 4 and a partial one
    engine = Engine(model, EngineConfig(max_batch_size=8, max_num_tokens=64, page_size=4, max_model_len=128))
    ids = [engine.add_request(prompt, params, seed=5 + j) for j in range(4)]
    engine.step()
    seqs = [engine._seqs[i] for i in ids]
    leader = seqs[0]
    assert all(s.pages[:2] == leader.pages[:2] for s in seqs)  # full pages shared
    assert len({s.pages[2] for s in seqs}) == 4  # the partial page copied per rollout
    assert [engine.cache.pages.refcount[p] for p in leader.pages] == [4, 4, 1]
    assert engine.stats()["prefill_tokens"] == len(prompt)
    done = {}
    while engine.has_work:
        done.update(engine.step())
    shared = [done[i].token_ids for i in ids]
    independent = [
        Engine(model, EngineConfig(max_batch_size=1, max_num_tokens=64, page_size=4, max_model_len=128))
        .generate([prompt], dataclasses.replace(params, seed=5 + j))[0].token_ids
        for j in range(4)
    ]
    assert shared == independent
    assert len({tuple(t) for t in shared}) == 4  # different seeds, different rollouts
    assert sum(engine.cache.pages.refcount) == 0


def test_generate_with_n_numbers_rows_prompt_major_with_seed_plus_row(model) -> None:
    params = SamplingParams(max_new_tokens=12, temperature=0.8, seed=100, **NO_STOP)
    engine = Engine(model, EngineConfig(max_batch_size=8, max_num_tokens=64, page_size=4, max_model_len=64))
    rows = engine.generate(PROMPTS[:2], params, n=3)
    assert engine.stats()["prefill_tokens"] == len(PROMPTS[0]) + len(PROMPTS[1])
    alone = Engine(model, EngineConfig(max_batch_size=1, max_num_tokens=64, page_size=4, max_model_len=64))
    row4 = alone.generate([PROMPTS[1]], dataclasses.replace(params, seed=104))[0]
    assert rows[4].token_ids == row4.token_ids
    assert [c.prompt_tokens for c in rows] == [5, 5, 5, 2, 2, 2]


def test_seeded_sampling_is_batch_invariant_and_reproducible(model) -> None:
    params = SamplingParams(max_new_tokens=24, temperature=1.0, top_p=0.95, top_k=40, seed=7, **NO_STOP)
    alone = Engine(model, SMALL).generate([PROMPTS[3]], params)[0].token_ids
    # The same request (seed 7) among others arriving before and after it.
    engine = Engine(model, SMALL)
    others = dataclasses.replace(params, seed=1000)
    engine.add_request(PROMPTS[0], others)
    engine.add_request(PROMPTS[2], dataclasses.replace(others, temperature=0.0))
    engine.step()
    target = engine.add_request(PROMPTS[3], params)
    engine.step()
    engine.add_request(PROMPTS[1], others)
    done = {}
    while engine.has_work:
        done.update(engine.step())
    assert done[target].token_ids == alone
    again = Engine(model, SMALL).generate([PROMPTS[3]], params)[0].token_ids
    other_seed = Engine(model, SMALL).generate([PROMPTS[3]], dataclasses.replace(params, seed=8))[0].token_ids
    assert again == alone and other_seed != alone


def test_sampler_cuts_like_generate_and_greedy_rows_take_the_argmax() -> None:
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]]).repeat(400, 1)
    steps = list(range(400))

    def draws(**kw) -> set[int]:
        cfg = dict(temperature=1.0, top_p=1.0, top_k=0) | kw
        batch = SamplingBatch.build([cfg["temperature"]] * 400, [cfg["top_p"]] * 400, [cfg["top_k"]] * 400,
                                    [3] * 400, steps, torch.device("cpu"))
        return set(sample(logits, batch).tolist())

    assert draws() == {0, 1, 2, 3, 4}
    assert draws(top_k=2) == {0, 1}
    # softmax = [.64, .24, .09, .03, .01]: top_p 0.7 keeps the first two (0.64 < 0.7 <= 0.88).
    assert draws(top_p=0.7) == {0, 1}
    assert draws(top_p=0.5) == {0}
    mixed = SamplingBatch.build([0.0, 1.0], [1.0, 1.0], [0, 1], [1, 1], [0, 0], torch.device("cpu"))
    assert sample(torch.tensor([[0.0, 5.0, 1.0], [9.0, 0.0, 0.0]]), mixed).tolist() == [1, 0]


def test_greedy_rows_take_the_argmax_of_the_logits_own_dtype() -> None:
    # Greedy no longer widens the logits to fp32 first: the same indices, ties to the first
    # and NaN above everything, for bf16 and fp16 logits as for their fp32 copies.
    g = torch.Generator().manual_seed(5)
    for dtype in (torch.bfloat16, torch.float16):
        logits = (torch.randn(48, 3001, generator=g) * 4).to(dtype)
        logits[3, 17] = float("nan")
        logits[5] = logits[5, 9]  # a row of ties
        logits[6, 100:110] = logits[6].max()
        batch = SamplingBatch.build([0.0] * 48, [1.0] * 48, [0] * 48, [1] * 48, [0] * 48, torch.device("cpu"))
        assert torch.equal(sample(logits, batch), logits.float().argmax(dim=-1))
        mixed = SamplingBatch.build([0.0, 1.0] * 24, [1.0] * 48, [0] * 48, [1] * 48, [0] * 48, torch.device("cpu"))
        drawn = sample(logits, mixed)
        assert torch.equal(drawn[0::2], logits.float().argmax(dim=-1)[0::2])


def test_stop_tokens_and_stop_strings_give_generates_completions(model, reference) -> None:
    row = reference[0].token_ids
    stop_tok = row[6]
    full = decode(reference[2].token_ids)
    stop_str = full[21:25]
    cases = [
        SamplingParams(max_new_tokens=24, stop_token_ids=(stop_tok,)),
        SamplingParams(max_new_tokens=24, stop_strings=("zzzz", stop_str), **NO_STOP),
        SamplingParams(max_new_tokens=9, stop_token_ids=(stop_tok,)),
    ]
    for params in cases:
        expect = generate(model, PROMPTS, params, decode=decode)
        got = Engine(model, SMALL).generate(PROMPTS, params, decode=decode)
        assert got == expect  # token ids, finish and stop reasons, counts and text
    stopped = Engine(model, SMALL).generate(PROMPTS[:1], cases[0], decode=decode)[0]
    first = row.index(stop_tok)
    assert (stopped.finish_reason, stopped.stop_reason, stopped.completion_tokens) == ("stop", stop_tok, first + 1)
    assert stopped.text == decode(row[:first])
    by_string = Engine(model, SMALL).generate(PROMPTS[2:3], cases[1], decode=decode)[0]
    assert (by_string.finish_reason, by_string.stop_reason) == ("stop", stop_str)
    assert by_string.text == full[: full.index(stop_str)]


def test_eos_of_the_config_stops_by_default(model) -> None:
    # With stop_token_ids None the config's eos ids (3, 5) stop, exactly as in model.generate.
    params = SamplingParams(max_new_tokens=30, temperature=1.0, seed=11)
    out = Engine(model, SMALL).generate(PROMPTS, params)
    assert all(c.finish_reason == "length" or c.token_ids[-1] in (3, 5) for c in out)
    assert all(3 not in c.token_ids[:-1] and 5 not in c.token_ids[:-1] for c in out)


def test_a_small_pool_preempts_and_recomputes_without_changing_tokens(model, reference) -> None:
    # 39 usable pages of 4 tokens cannot hold 4 sequences of ~80 tokens (80 pages): decoders are
    # preempted, requeued and recomputed.
    engine = Engine(model, EngineConfig(max_batch_size=4, max_num_tokens=32, page_size=4, max_model_len=100,
                                        num_pages=40))
    out = engine.generate(PROMPTS, GREEDY)
    assert [c.token_ids for c in out] == [c.token_ids for c in reference]
    assert engine.stats()["preemptions"] >= 1
    assert engine.cache.pages.num_free == 39


def test_overlapped_decode_gives_the_synchronous_engines_completions(model) -> None:
    # With overlap a step launches its decode before the previous step's tokens are applied on
    # the host: sequences that stopped are computed once more (the row is dropped), new ones join
    # rows that continue on the device. Seeded sampling, stop tokens, length limits, arrivals at
    # different steps and an abort in flight must give what the synchronous engine gives.
    def params(i: int) -> SamplingParams:
        return SamplingParams(max_new_tokens=12 + 7 * i, temperature=1.0, seed=40 + i,
                              stop_token_ids=(26860, 30201))  # frequent draws of the tiny model

    def run(overlap: bool) -> tuple[dict[int, tuple], list[bool], dict[str, int]]:
        engine = Engine(model, dataclasses.replace(SMALL, max_batch_size=4, overlap=overlap))
        forward = engine.runner.decode
        rows = [0]

        def counting(inp, splits):
            rows[0] += inp.ids.shape[0]
            return forward(inp, splits)

        engine.runner.decode = counting
        arrivals = {0: [0, 1], 2: [2], 3: [3, 0], 6: [1, 2]}
        ids, done, lagging = {}, {}, []
        step, aborted = 0, None
        while step <= max(arrivals) or engine.has_work:
            for i in arrivals.get(step, []):
                ids[engine.add_request(PROMPTS[i], params(len(ids)))] = len(ids)
            if step == 9:
                aborted = next(r for r in ids if r not in done)
                engine.abort(aborted)
            for rid, c in engine.step():
                done[ids[rid]] = (c.token_ids, c.finish_reason, c.stop_reason)
            running = [s for s in engine.scheduler.active if s.status is Status.RUNNING and s.output]
            # after an overlapped step a decoder's newest token is still on the device, so every
            # position it has is computed; a synchronous step leaves the newest one to compute
            lagging += [s.num_computed == s.length for s in running]
            step += 1
        assert engine.cache.pages.num_free == engine.cache.pages.capacity
        return done, lagging, engine.stats() | {"decode rows": rows[0]}

    sync, sync_lag, sync_stats = run(False)
    over, over_lag, over_stats = run(True)
    assert over == sync and len(sync) == 6  # six finished, one aborted
    assert any(f == "stop" for _, f, _ in sync.values()) and any(f == "length" for _, f, _ in sync.values())
    assert not any(sync_lag) and any(over_lag)
    # one extra row per sequence that a sampled stop token ended in decode; none for the
    # length limit, which is known before the token is read back
    stopped = sum(f == "stop" and len(t) > 1 for t, f, _ in sync.values())
    assert over_stats["decode rows"] - sync_stats["decode rows"] == stopped
    # the same tokens applied, less the aborted request's token that was in flight at the abort
    assert over_stats["decode_tokens"] == sync_stats["decode_tokens"] - 1


def test_max_model_len_ends_a_sequence_with_finish_reason_length(model, reference) -> None:
    engine = Engine(model, EngineConfig(max_batch_size=2, max_num_tokens=16, page_size=4, max_model_len=20))
    out = engine.generate(PROMPTS[:1], GREEDY)[0]
    assert (out.finish_reason, out.completion_tokens) == ("length", 15)  # 5 prompt + 15 = 20 positions
    assert out.token_ids == reference[0].token_ids[:15]


def test_zero_new_tokens_and_bad_requests(model) -> None:
    engine = Engine(model, SMALL)
    out = engine.generate(PROMPTS[:2], SamplingParams(max_new_tokens=0))
    assert [(c.token_ids, c.finish_reason, c.completion_tokens) for c in out] == [([], "length", 0)] * 2
    with pytest.raises(ValueError, match="prompt is empty"):
        engine.add_request([])
    with pytest.raises(ValueError, match="leaves no room in max_model_len=128"):
        engine.add_request([2] * 128)
    with pytest.raises(ValueError, match="stop_strings need a decode callback"):
        engine.add_request([2], SamplingParams(stop_strings=("x",)))
    with pytest.raises(ValueError, match="max_num_tokens=2 must be >= max_batch_size=4"):
        Engine(model, EngineConfig(max_batch_size=4, max_num_tokens=2))
    with pytest.raises(ValueError, match="cannot hold one sequence of max_model_len=64"):
        Engine(model, EngineConfig(page_size=4, max_model_len=64, num_pages=16))


def test_page_pool_refcounts() -> None:
    pool = PagePool(5)
    a = pool.allocate(2)
    assert a == [1, 2] and pool.num_free == 2
    pool.share(a)
    pool.release(a)
    assert pool.num_free == 2
    pool.release(a)
    assert pool.num_free == 4
    with pytest.raises(MemoryError, match="5 pages requested, 4 free"):
        pool.allocate(5)
    with pytest.raises(ValueError, match="released more often than held"):
        pool.release([1])


_INTERPRETED = """
import torch
from model import SamplingParams, generate
from model.tiny import build_tiny
from model.engine import Engine, EngineConfig
torch.set_num_threads(1)
m = build_tiny()
prompts = [[2, 10, 11, 12, 13], [2, 7, 8, 9, 20, 30, 40, 50, 60, 70, 80]]
p = SamplingParams(max_new_tokens=3, stop_token_ids=())
engine = Engine(m, EngineConfig(max_batch_size=2, max_num_tokens=8, page_size=4, max_model_len=64, backend="triton"))
assert engine.ops.name == "triton"
out = engine.generate(prompts, p)
print([c.token_ids for c in out] == [c.token_ids for c in generate(m, prompts, p)])
"""


@pytest.mark.parametrize(("fused_qk", "table"), [("0", "default"), ("1", "default"), ("1", "H100"), ("1", "split-k"),
                                               ("1", "moe-tma")],
                         ids=["composed-qk", "fused-qk", "fused-qk-hopper-table", "fused-qk-moe-split-k",
                              "fused-qk-moe-tma"])
def test_triton_kernels_in_the_engine_match_generate_under_the_interpreter(fused_qk: str, table: str,
                                                                            tmp_path: Path) -> None:
    # TRITON_INTERPRET must be set before Triton is imported: a fresh interpreter. The 8-token
    # budget splits the 11-token prompt, so the prefill over cached pages runs too. The tiny
    # config's shapes (4 query heads, 2 key heads, head_dim 16) are ones the fused q/k kernel
    # takes, so unless ZAYA_FUSED_QK=0 it runs in every layer of prefill and decode. The
    # interpreter gets the CPU table; "H100" forces the Hopper entries (TMA prefill, swapped
    # MoE tiles) through ZAYA_KERNEL_TUNING, so the code paths the GPU runs are checked here too;
    # "split-k" cuts the tiny model's K of 64 into three slices of 16 in every MoE GEMM;
    # "moe-tma" reads the expert weights through tensor descriptors (both MoE layouts).
    import json

    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT), ZAYA_FUSED_QK=fused_qk)
    if table == "H100":
        from dataclasses import asdict

        from model.kernels import tuning

        entries = {k: asdict(v) for k, v in tuning._table_for(table).items()}
    elif table == "split-k":
        entries = {r: {"block_k": 16, "split_k": 3} for r in ("moe_small", "moe_medium", "moe_large")}
    elif table == "moe-tma":
        entries = {"moe_small": {"tma": 1, "swap_ab": 1}, "moe_medium": {"tma": 1}, "moe_large": {"tma": 1}}
    if table != "default":
        (tmp_path / "table.json").write_text(json.dumps(entries))
        env["ZAYA_KERNEL_TUNING"] = str(tmp_path / "table.json")
    done = subprocess.run([sys.executable, "-c", _INTERPRETED], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True"


def test_abort_frees_a_running_request_and_requeues_its_waiting_siblings(model, reference) -> None:
    engine = Engine(model, EngineConfig(max_batch_size=4, max_num_tokens=4, page_size=4, max_model_len=128))
    leader, sibling = (engine.add_request(PROMPTS[2], GREEDY) for _ in range(2))
    other = engine.add_request(PROMPTS[0], GREEDY)
    engine.step()  # the 11-token prompt is still being prefilled (4 of 11), its sibling waits to fork
    assert engine.abort(leader) and not engine.abort(leader)
    done = {}
    while engine.has_work:
        done.update(engine.step())
    assert sorted(done) == [sibling, other]
    assert done[sibling].token_ids == reference[2].token_ids
    assert done[other].token_ids == reference[0].token_ids
    assert engine.cache.pages.num_free == engine.cache.pages.capacity


class EagerBuckets(DecodeGraphs):
    """DecodeGraphs' bucketing and scratch-row padding, with eager calls in place of replays (CPU)."""

    buffers: dict[int, torch.Tensor]

    def capture(self) -> None:
        pass

    def inputs(self, bucket: int) -> torch.Tensor:
        if not hasattr(self, "buffers"):
            self.buffers = {}
        return self.buffers.setdefault(bucket, torch.zeros(4, bucket, dtype=torch.int64))

    def replay(self, bucket: int) -> torch.Tensor:
        return self.runner.decode(decode_inputs(self.buffers[bucket]), self.splits_for(bucket))


def test_padding_rows_of_a_graph_bucket_leave_the_real_rows_unchanged(model, reference) -> None:
    # What a CUDA-graph replay computes: 1..3 live rows padded to buckets of 2 and 4 rows that
    # read and write the scratch slot and page. The real rows must not notice.
    engine = Engine(model, EngineConfig(max_batch_size=4, max_num_tokens=16, page_size=4, max_model_len=128))
    engine.graphs = EagerBuckets(engine.runner, (2, 4), lambda b: engine._splits(b, 128), scratch_row=[0, 0, 0, 1])
    done = run_with_arrivals(engine, {0: [0], 5: [1], 9: [2]}, GREEDY)
    assert [done[i] for i in range(3)] == [c.token_ids for c in reference[:3]]
