"""Batched generation with ZAYA1: left-padded prefill, then an explicit token-by-token loop.

    completions = generate(model, [prompt_ids_a, prompt_ids_b], SamplingParams(temperature=0.7, seed=1),
                           decode=tokenizer.decode)

Prompts of different lengths are left-padded into one batch; the padding is masked out of
attention and zeroed before the CCA convolutions, and positions are counted over real
tokens, so a prompt generates the same tokens alone or in a batch (greedy). Sampling uses
one `torch.Generator` per row seeded with `seed + row`, so a row's draws do not depend on
the other rows of the batch either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .zaya1 import Zaya1ForCausalLM

FINISH_STOP = "stop"
FINISH_LENGTH = "length"


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means no top-k cut
    seed: int | None = None  # None: the global torch RNG, not reproducible
    stop_token_ids: tuple[int, ...] | None = None  # None: the model config's eos ids
    stop_strings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be >= 0")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be >= 0")
        if any(not s for s in self.stop_strings):
            raise ValueError("stop_strings must be non-empty strings")


@dataclass
class Completion:
    token_ids: list[int]  # generated tokens; ends with the stop token when one ended the sequence
    finish_reason: str  # "stop" (stop token or string) or "length" (max_new_tokens or cache full)
    prompt_tokens: int
    completion_tokens: int
    stop_reason: int | str | None = None  # the stop token id or stop string that ended it
    text: str | None = None  # decoded completion without the stop token / stop string and what follows


def sample_next(logits: torch.Tensor, params: SamplingParams, generators: list[torch.Generator] | None) -> torch.Tensor:
    """One token per row from fp32 logits [B, V]: argmax when temperature is 0, else top-k/top-p sampling."""
    if params.temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens before it already cover top_p; the first always stays.
        drop = (cumulative - sorted_logits.softmax(dim=-1)) >= params.top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = logits.softmax(dim=-1)
    if generators is None:
        return torch.multinomial(probs, 1).squeeze(-1)
    return torch.cat([torch.multinomial(probs[i : i + 1], 1, generator=g) for i, g in enumerate(generators)]).squeeze(-1)


def _stop_string_hit(
    tokens: list[int], stop_strings: Sequence[str], decode: Callable[[list[int]], str], window: int
) -> bool:
    # Decode only the tail: a stop string ending at the newest token spans at most 4 bytes per
    # character, and a byte-level token holds at least one byte.
    tail = decode(tokens[-window:])
    return any(s in tail for s in stop_strings)


@torch.inference_mode()
def generate(
    model: Zaya1ForCausalLM,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams = SamplingParams(),
    *,
    decode: Callable[[list[int]], str] | None = None,
    pad_token_id: int | None = None,
) -> list[Completion]:
    """Complete every prompt (a list of token ids); returns one `Completion` per prompt, in order.

    decode: token ids -> text; required for stop strings, and fills `Completion.text`.
    """
    if params.stop_strings and decode is None:
        raise ValueError("stop_strings need a decode callback (token ids -> text)")
    if not prompts:
        return []
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty; a prompt needs at least one token (e.g. bos)")
    config = model.config
    device = model.device
    pad = config.pad_token_id if pad_token_id is None else pad_token_id
    pad = 0 if pad is None else pad
    stop_ids = set(config.eos_token_ids if params.stop_token_ids is None else params.stop_token_ids)
    window = 8 + 4 * max((len(s) for s in params.stop_strings), default=0)

    b = len(prompts)
    lengths = [len(p) for p in prompts]
    longest = max(lengths)
    ids = torch.full((b, longest), pad, dtype=torch.long)
    mask = torch.zeros((b, longest), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, longest - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
        mask[i, longest - len(p) :] = 1
    ids, mask = ids.to(device), mask.to(device)

    generators = None
    if params.seed is not None and params.temperature > 0:
        generators = [torch.Generator(device=device).manual_seed(params.seed + i) for i in range(b)]

    outputs: list[list[int]] = [[] for _ in range(b)]
    finish: list[str | None] = [None] * b
    stop_reason: list[int | str | None] = [None] * b
    if params.max_new_tokens == 0:
        finish = [FINISH_LENGTH] * b
    else:
        cache = model.new_cache(b, longest + params.max_new_tokens)
        logits = model(ids, attention_mask=mask, cache=cache, num_logits_to_keep=1)[:, -1].float()
        for step in range(params.max_new_tokens):
            next_tokens = sample_next(logits, params, generators)
            for i, tok in enumerate(next_tokens.tolist()):
                if finish[i] is not None:
                    continue
                outputs[i].append(tok)
                if tok in stop_ids:
                    finish[i], stop_reason[i] = FINISH_STOP, tok
                elif params.stop_strings and _stop_string_hit(outputs[i], params.stop_strings, decode, window):
                    finish[i] = FINISH_STOP
                elif len(outputs[i]) == params.max_new_tokens:
                    finish[i] = FINISH_LENGTH
            if all(f is not None for f in finish):
                break
            # Finished rows keep stepping with their last token; their outputs are ignored.
            mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)
            logits = model(next_tokens[:, None], attention_mask=mask, cache=cache)[:, -1].float()

    completions = []
    for i in range(b):
        tokens = outputs[i]
        text = None
        if decode is not None:
            text_tokens = tokens[:-1] if isinstance(stop_reason[i], int) else tokens
            text = decode(text_tokens)
            if finish[i] == FINISH_STOP and stop_reason[i] is None:
                # A stop string ended it: cut at its first occurrence and record which one.
                hits = [(text.find(s), s) for s in params.stop_strings if s in text]
                if hits:
                    cut, which = min(hits)
                    text, stop_reason[i] = text[:cut], which
        completions.append(
            Completion(
                token_ids=tokens,
                finish_reason=finish[i] or FINISH_LENGTH,
                prompt_tokens=lengths[i],
                completion_tokens=len(tokens),
                stop_reason=stop_reason[i],
                text=text,
            )
        )
    return completions
