"""Generation: greedy determinism, batch invariance, seeded sampling, stop tokens/strings, finish reasons."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch

from model import SamplingParams, Zaya1Config, Zaya1ForCausalLM, generate, load_tiny, randomize_, sample_next
from torch_checks import one_thread  # noqa: F401 (autouse fixture)

CONFIG = dataclasses.replace(Zaya1Config.named("tiny"), vocab_size=97, sliding_window=6, eos_token_id=3)
PROMPTS = [[2, 10, 11, 12, 13], [2, 50], [2, 7, 8, 9, 20, 30, 40, 50, 60, 70, 80]]
NO_STOP = dict(stop_token_ids=())




def decode(ids: list[int]) -> str:
    # A toy detokenizer: token t is the two-letter piece of t in base 26.
    return "".join(chr(97 + t // 26) + chr(97 + t % 26) for t in ids)


@pytest.fixture(scope="module")
def model() -> Zaya1ForCausalLM:
    return randomize_(Zaya1ForCausalLM(CONFIG), seed=13, skip_bias=0.2).eval()


@pytest.fixture(scope="module")
def greedy(model: Zaya1ForCausalLM):
    return generate(model, PROMPTS, SamplingParams(max_new_tokens=20, **NO_STOP), decode=decode)


def test_greedy_generation_is_deterministic_and_not_degenerate(model: Zaya1ForCausalLM, greedy) -> None:
    again = generate(model, PROMPTS, SamplingParams(max_new_tokens=20, **NO_STOP), decode=decode)
    assert [c.token_ids for c in again] == [c.token_ids for c in greedy]
    for c, prompt in zip(greedy, PROMPTS):
        assert (c.finish_reason, c.completion_tokens, c.prompt_tokens) == ("length", 20, len(prompt))
        assert c.text == decode(c.token_ids)
        assert len(set(c.token_ids)) >= 3  # the test model does not just repeat one token
    assert len({t for c in greedy for t in c.token_ids}) >= 8


def test_greedy_tokens_are_the_argmax_of_a_full_forward(model: Zaya1ForCausalLM, greedy) -> None:
    for prompt, c in zip(PROMPTS, greedy):
        seq = torch.tensor([prompt + c.token_ids])
        with torch.no_grad():
            argmax = model(seq)[0, len(prompt) - 1 : -1].argmax(-1)
        assert argmax.tolist() == c.token_ids


def test_batched_generation_equals_one_by_one(model: Zaya1ForCausalLM, greedy) -> None:
    for prompt, batched in zip(PROMPTS, greedy):
        alone = generate(model, [prompt], SamplingParams(max_new_tokens=20, **NO_STOP))[0]
        assert alone.token_ids == batched.token_ids


def test_seeded_sampling_is_reproducible_and_row_i_uses_seed_plus_i(model: Zaya1ForCausalLM) -> None:
    params = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.9, top_k=20, seed=7, **NO_STOP)
    first = generate(model, PROMPTS, params)
    assert [c.token_ids for c in generate(model, PROMPTS, params)] == [c.token_ids for c in first]
    other_seed = generate(model, PROMPTS, dataclasses.replace(params, seed=8))
    assert [c.token_ids for c in other_seed] != [c.token_ids for c in first]
    # Batch invariance of sampling: row 2 of the batch is the prompt alone with seed 7 + 2.
    alone = generate(model, [PROMPTS[2]], dataclasses.replace(params, seed=9))[0]
    assert alone.token_ids == first[2].token_ids


def test_top_k_and_top_p_cut_the_distribution() -> None:
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    gens = [torch.Generator().manual_seed(s) for s in range(1)]
    draws = {sample_next(logits, SamplingParams(temperature=1.0, top_k=2), gens).item() for _ in range(200)}
    assert draws == {0, 1}
    # softmax = [.64, .24, .09, .03, .01]: top_p 0.7 keeps the first two (0.64 < 0.7 <= 0.88).
    draws = {sample_next(logits, SamplingParams(temperature=1.0, top_p=0.7), gens).item() for _ in range(200)}
    assert draws == {0, 1}
    assert sample_next(logits, SamplingParams(temperature=0.0), None).item() == 0


def test_stop_token_ends_the_sequence_with_finish_reason_stop(model: Zaya1ForCausalLM, greedy) -> None:
    row = greedy[0].token_ids
    stop = row[5]
    first = row.index(stop)
    out = generate(model, PROMPTS[:1], SamplingParams(max_new_tokens=20, stop_token_ids=(stop,)), decode=decode)[0]
    assert out.token_ids == row[: first + 1]
    assert (out.finish_reason, out.stop_reason, out.completion_tokens) == ("stop", stop, first + 1)
    assert out.text == decode(row[:first])  # the stop token is not part of the text


def test_stop_string_cuts_the_text_at_its_first_occurrence(model: Zaya1ForCausalLM, greedy) -> None:
    row = greedy[2].token_ids
    full = decode(row)
    stop = full[13:17]  # spans tokens 6 and 7 (two letters each) plus a boundary inside token 8
    cut = full.index(stop)
    ends_at = next(n for n in range(1, len(row) + 1) if stop in decode(row[:n]))
    out = generate(
        model, [PROMPTS[2]], SamplingParams(max_new_tokens=20, stop_strings=("zzzz", stop), **NO_STOP), decode=decode
    )[0]
    assert (out.finish_reason, out.stop_reason) == ("stop", stop)
    assert out.token_ids == row[:ends_at] and out.completion_tokens == ends_at
    assert out.text == full[:cut]


def test_rows_finish_independently_in_a_batch(model: Zaya1ForCausalLM, greedy) -> None:
    stop = greedy[1].token_ids[3]
    out = generate(model, PROMPTS, SamplingParams(max_new_tokens=20, stop_token_ids=(stop,)))
    for c, g in zip(out, greedy):
        if stop in g.token_ids:
            assert c.finish_reason == "stop" and c.token_ids == g.token_ids[: g.token_ids.index(stop) + 1]
        else:
            assert c.finish_reason == "length" and c.token_ids == g.token_ids


def test_zero_new_tokens_and_bad_requests(model: Zaya1ForCausalLM) -> None:
    out = generate(model, PROMPTS, SamplingParams(max_new_tokens=0))
    assert [(c.token_ids, c.finish_reason, c.completion_tokens) for c in out] == [([], "length", 0)] * 3
    with pytest.raises(ValueError, match="stop_strings need a decode callback"):
        generate(model, PROMPTS, SamplingParams(stop_strings=("x",)))
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(model, [[2], []])
    with pytest.raises(ValueError, match="top_p=0.0 must be in"):
        SamplingParams(top_p=0.0)


def test_tiny_packaged_model_builds_identically_and_generates_with_the_embedded_tokenizer(tmp_path: Path) -> None:
    model, tokenizer = load_tiny(cache_dir=tmp_path / "a")
    model_b, _ = load_tiny(cache_dir=tmp_path / "b")
    files = [next((tmp_path / d).glob("*/model.safetensors")) for d in ("a", "b")]
    digests = {hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    assert len(digests) == 1  # same seed, same bytes
    assert model.config == Zaya1Config.named("tiny")
    assert tokenizer is not None and tokenizer.get_vocab_size() == model.config.vocab_size == 32768
    assert [tokenizer.token_to_id(t) for t in ("<pad>", "<bos>", "<eos>", "<|im_end|>")] == [0, 2, 3, 5]
    prompt = [2] + tokenizer.encode("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n").ids
    out = generate(model, [prompt], SamplingParams(max_new_tokens=8), decode=tokenizer.decode)[0]
    assert out.completion_tokens == len(out.token_ids) >= 1 and out.text is not None
    assert out.token_ids == generate(model_b, [prompt], SamplingParams(max_new_tokens=8))[0].token_ids
