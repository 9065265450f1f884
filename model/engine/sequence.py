"""One request's life in the engine, and when it ends (the stop rules of `model.generate`).

A sequence is WAITING (queued, or preempted and to be recomputed), PREFILL (its prompt is
being written to the cache, maybe over several steps), FORKING (a prefix-sharing sibling
waiting for its group leader's prefill), RUNNING (decoding one token per step) or FINISHED.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence as Seq
from dataclasses import dataclass, field

from model.generate import FINISH_LENGTH, FINISH_STOP, Completion, SamplingParams


class Status(enum.Enum):
    WAITING = "waiting"
    PREFILL = "prefill"
    FORKING = "forking"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    request_id: int
    prompt: list[int]
    params: SamplingParams
    seed: int  # the request's noise seed (params.seed, or drawn when None)
    stop_ids: frozenset[int]
    arrival: int  # order of arrival: the scheduler serves and preempts by it
    output: list[int] = field(default_factory=list)
    status: Status = Status.WAITING
    num_computed: int = 0  # positions whose K/V and state are in the cache
    pages: list[int] = field(default_factory=list)
    slot: int | None = None
    followers: list[Sequence] = field(default_factory=list)  # prefix-sharing siblings (leader only)
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    # its last token (by max_new_tokens or max_model_len) is sampled but not yet applied on the
    # host (the engine's overlapped decode): nothing more to compute, so it is not scheduled
    last_in_flight: bool = False

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.output

    @property
    def last_token(self) -> int:
        """The newest token (the next decode input): `tokens[-1]` without building the list."""
        return self.output[-1] if self.output else self.prompt[-1]

    @property
    def length(self) -> int:
        return len(self.prompt) + len(self.output)

    @property
    def prefill_target(self) -> int:
        """Positions to compute before decoding: the prompt, or for a recompute everything but the
        last sampled token (which becomes the next decode input instead of being sampled again)."""
        return self.length - 1 if self.output else self.length

    @property
    def shares_prompt(self) -> bool:
        return bool(self.followers)


def stop_string_window(params: SamplingParams) -> int:
    # A stop string ending at the newest token spans at most 4 bytes per character, and a
    # byte-level token holds at least one byte (as in model.generate).
    return 8 + 4 * max((len(s) for s in params.stop_strings), default=0)


def check_stop(seq: Sequence, decode: Callable[[list[int]], str] | None, max_model_len: int) -> bool:
    """After a token was appended: set the finish reason if the sequence is done; True when it is."""
    tok = seq.output[-1]
    params = seq.params
    if tok in seq.stop_ids:
        seq.finish_reason, seq.stop_reason = FINISH_STOP, tok
    elif params.stop_strings and decode is not None and any(
        s in decode(seq.output[-stop_string_window(params):]) for s in params.stop_strings
    ):
        seq.finish_reason = FINISH_STOP
    elif len(seq.output) >= params.max_new_tokens or seq.length >= max_model_len:
        seq.finish_reason = FINISH_LENGTH
    return seq.finish_reason is not None


def completion(seq: Sequence, decode: Callable[[list[int]], str] | None, stop_strings: Seq[str]) -> Completion:
    """The finished sequence as `model.generate` reports it (text cut before the stop token/string)."""
    tokens = list(seq.output)
    text = None
    stop_reason = seq.stop_reason
    if decode is not None:
        text = decode(tokens[:-1] if isinstance(stop_reason, int) else tokens)
        if seq.finish_reason == FINISH_STOP and stop_reason is None:
            hits = [(text.find(s), s) for s in stop_strings if s in text]
            if hits:
                cut, which = min(hits)
                text, stop_reason = text[:cut], which
    return Completion(
        token_ids=tokens,
        finish_reason=seq.finish_reason or FINISH_LENGTH,
        prompt_tokens=len(seq.prompt),
        completion_tokens=len(tokens),
        stop_reason=stop_reason,
        text=text,
    )
