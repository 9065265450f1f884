"""Teachers: whatever writes the aggregated solution for an aggregation prompt.

One interface, `Teacher.generate(requests, sampling) -> list[Generation]` (results in
request order), three implementations:
  * `OpenAITeacher`: any OpenAI-compatible server (`/v1/chat/completions` or
    `/v1/completions`), bounded concurrency with threads, retries with exponential
    backoff on 429/5xx/timeouts, a per-request timeout. The API key is read from the
    environment variable the config names and is never logged or written anywhere.
  * `LocalModelTeacher`: the packaged ZAYA1 model in this process (the tiny seeded
    model on CPU for tests and the demo, or a checkpoint on one GPU).
  * `RayModelPool`: `ray.remote(num_gpus=1)` actors, each holding a `LocalModelTeacher`,
    requests split across them in contiguous chunks and gathered in order.

Every request carries its own seed (derived from seed, problem, round and subset), so
the output does not depend on concurrency, batching or how many actors serve it.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

# Statuses worth retrying: rate limits, request timeouts and server-side failures. Any
# other 4xx is the request's own fault (too long, bad parameters) and is not retried.
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int | None = None
    max_tokens: int = 4096
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str  # the user message (the aggregation prompt, or a problem for a population)
    seed: int


@dataclass
class Generation:
    text: str
    finish_reason: str  # "stop", "length", or "error"
    completion_tokens: int  # as reported by the teacher; -1 when it did not say
    error: str | None = None  # set when the teacher refused this request (not retried)


class TeacherUnavailable(RuntimeError):
    """The teacher kept failing after every retry; the run stops, resumable."""


class Teacher(Protocol):
    name: str

    def generate(self, requests: Sequence[GenerationRequest], sampling: Sampling,
                 on_done: Callable[[Generation], None] | None = None) -> list[Generation]: ...

    def close(self) -> None: ...


# ----------------------------------------------------------------------------------------
# OpenAI-compatible endpoints


@dataclass(frozen=True)
class OpenAISettings:
    base_url: str  # e.g. "http://127.0.0.1:8000/v1"
    model: str
    api_key_env: str | None = None  # name of the environment variable holding the key
    endpoint: str = "chat"  # "chat" (/chat/completions) or "completions" (/completions)
    concurrency: int = 8
    retries: int = 5
    timeout: float = 600.0  # seconds per request
    backoff: float = 1.0  # first retry delay; doubles each retry
    backoff_max: float = 60.0
    # /completions gets the prompt wrapped in this chat template ({prompt} is replaced)
    completion_template: str = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    extra_body: dict[str, Any] = field(default_factory=dict)


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class OpenAITeacher:
    def __init__(self, settings: OpenAISettings, sleep: Callable[[float], None] = time.sleep):
        if settings.endpoint not in ("chat", "completions"):
            raise ValueError(f"teacher.endpoint must be 'chat' or 'completions', got {settings.endpoint!r}")
        self.s = settings
        self.name = f"openai:{settings.model}"
        self._sleep = sleep
        self._key: str | None = None
        if settings.api_key_env:
            key = os.environ.get(settings.api_key_env)
            if not key:
                raise ValueError(f"teacher.api_key_env: environment variable {settings.api_key_env} is not set")
            self._key = key
        path = "/chat/completions" if settings.endpoint == "chat" else "/completions"
        self._url = settings.base_url.rstrip("/") + path
        self.retried = 0  # retries performed, for the summary
        self._lock = threading.Lock()
        # Set when one request gives up: the others stop instead of retrying on their own.
        self._abort = threading.Event()

    def _scrub(self, text: str) -> str:
        """Never let the key reach a message (a server may echo headers in errors)."""
        return text.replace(self._key, "***") if self._key else text

    def _payload(self, req: GenerationRequest, sampling: Sampling) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.s.model, "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature, "top_p": sampling.top_p, "seed": req.seed,
        }
        if sampling.top_k is not None:
            body["top_k"] = sampling.top_k
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if self.s.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": req.prompt}]
        else:
            body["prompt"] = self.s.completion_template.replace("{prompt}", req.prompt)
        body.update(self.s.extra_body)
        return body

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        req = urllib.request.Request(self._url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.s.timeout) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            detail = self._scrub(e.read().decode("utf-8", "replace")[:300])
            if e.code in RETRY_STATUSES:
                ra = e.headers.get("Retry-After") if e.headers else None
                try:
                    retry_after = float(ra) if ra is not None else None
                except ValueError:
                    retry_after = None
                raise _Retryable(f"HTTP {e.code}: {detail}", retry_after) from None
            raise ValueError(f"HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
            raise _Retryable(self._scrub(f"{type(e).__name__}: {e}")) from None
        except json.JSONDecodeError as e:
            raise _Retryable(f"invalid JSON in response: {e}") from None

    def _parse(self, data: dict[str, Any]) -> Generation:
        try:
            choice = data["choices"][0]
            if self.s.endpoint == "chat":
                msg = choice["message"]
                text = msg.get("content") or ""
                # Servers with a reasoning parser return the thinking separately; put it
                # back in the one form the rest of the pipeline reads.
                rc = msg.get("reasoning_content") or msg.get("reasoning")
                if rc:
                    text = f"<think>\n{rc}\n</think>\n\n{text}"
            else:
                text = choice["text"]
            finish = choice.get("finish_reason") or "stop"
        except (KeyError, IndexError, TypeError) as e:
            raise _Retryable(f"malformed response ({type(e).__name__}: {e})") from None
        usage = data.get("usage") or {}
        tokens = usage.get("completion_tokens")
        return Generation(text=text, finish_reason=str(finish),
                          completion_tokens=int(tokens) if isinstance(tokens, int) else -1)

    def _one(self, req: GenerationRequest, sampling: Sampling) -> Generation:
        body = self._payload(req, sampling)
        last = ""
        for attempt in range(self.s.retries + 1):
            if self._abort.is_set():
                raise TeacherUnavailable(f"{self._url}: stopped after another request gave up")
            try:
                return self._parse(self._post(body))
            except _Retryable as e:
                last = str(e)
                if attempt == self.s.retries:
                    break
                with self._lock:
                    self.retried += 1
                delay = min(self.s.backoff_max, self.s.backoff * (2 ** attempt))
                if e.retry_after is not None:
                    delay = min(self.s.backoff_max, max(delay, e.retry_after))
                self._sleep(delay)
            except ValueError as e:
                return Generation(text="", finish_reason="error", completion_tokens=0, error=str(e))
        self._abort.set()
        raise TeacherUnavailable(f"{self._url}: gave up after {self.s.retries + 1} attempts: {last}")

    def generate(self, requests: Sequence[GenerationRequest], sampling: Sampling,
                 on_done: Callable[[Generation], None] | None = None) -> list[Generation]:
        out: list[Generation | None] = [None] * len(requests)
        self._abort.clear()

        def work(i: int) -> None:
            g = self._one(requests[i], sampling)
            out[i] = g
            if on_done is not None:
                on_done(g)

        with ThreadPoolExecutor(max_workers=max(1, self.s.concurrency)) as pool:
            # list() re-raises the first TeacherUnavailable in request order.
            list(pool.map(work, range(len(requests))))
        return [g for g in out if g is not None]

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------------------
# construction


def build_teacher(spec: Any, tokenizer: Any) -> Teacher:
    """The teacher a `TeacherSpec` describes. `tokenizer` is the run's `LoadedTokenizer`
    (the local model encodes prompts and decodes outputs with it)."""
    if spec.kind == "openai":
        return OpenAITeacher(spec.openai)
    if spec.kind == "zaya1":
        from zaya_data.rsa.model_teacher import LocalModelTeacher, RayModelPool

        if spec.gpus > 0:
            return RayModelPool(spec, num_actors=spec.gpus)
        return LocalModelTeacher.from_spec(spec, tokenizer)
    raise ValueError(f"unknown teacher kind {spec.kind!r}")
