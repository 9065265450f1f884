"""A small OpenAI-compatible server on loopback for tests: `/v1/chat/completions` and
`/v1/completions`, deterministic answers, optional failures to exercise retries.

Its "model" reads every `\\boxed{...}` and `Final answer:` in the prompt and answers with
the most common one (ties: the first seen), so an aggregation run through it has real
agreement and accuracy statistics; a prompt without candidates (a population request)
gets an answer derived from the request's seed. The reply text depends only on the
prompt and the seed, so a rerun gives byte-identical outputs.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")


def stub_reply(prompt: str, seed: int) -> str:
    answers = _BOXED.findall(prompt)
    if answers and "Candidate 1" in prompt:
        best = Counter(answers).most_common()
        top = max(n for _, n in best)
        pick = next(a for a in answers if Counter(answers)[a] == top)
        return (f"Comparing the {prompt.count('Candidate ')} candidates (seed {seed}).\n"
                f"Most of them agree, and the argument checks out.\n\n"
                f"The answer is $\\boxed{{{pick}}}$.")
    guess = int(hashlib.sha256(f"{prompt}\x00{seed}".encode()).hexdigest(), 16) % 4
    return f"Working through the problem step by step.\nSo the result follows.\n\nThe answer is $\\boxed{{{guess}}}$."


class StubOpenAIServer:
    """`with StubOpenAIServer(fail_first=[429, 500]) as s: s.base_url` -> "http://127.0.0.1:PORT/v1"."""

    def __init__(self, fail_first: list[int] | None = None, hang_first: int = 0, hang_seconds: float = 2.0,
                 expected_key: str | None = None, max_tokens_cap: int | None = None, echo_auth: bool = False):
        self.fail_first = list(fail_first or [])
        self.hang_first = hang_first
        self.hang_seconds = hang_seconds
        self.expected_key = expected_key
        self.max_tokens_cap = max_tokens_cap
        self.echo_auth = echo_auth  # error bodies quote the Authorization header (a careless server)
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []  # every request body, in arrival order
        self.statuses: list[int] = []  # the status of every reply
        self.auth_headers: list[str | None] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> "StubOpenAIServer":
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                with stub.lock:
                    stub.statuses.append(status)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with stub.lock:
                    n = len(stub.requests)
                    stub.requests.append(body)
                    stub.auth_headers.append(self.headers.get("Authorization"))
                if n < stub.hang_first:
                    time.sleep(stub.hang_seconds)
                if n < len(stub.fail_first):
                    msg = "injected failure"
                    if stub.echo_auth:
                        msg += f" for Authorization: {self.headers.get('Authorization')}"
                    self._send(stub.fail_first[n], {"error": {"message": msg}})
                    return
                if stub.expected_key is not None and self.headers.get("Authorization") != f"Bearer {stub.expected_key}":
                    self._send(401, {"error": {"message": "bad key"}})
                    return
                if self.path == "/v1/chat/completions":
                    prompt = body["messages"][-1]["content"]
                elif self.path == "/v1/completions":
                    prompt = body["prompt"]
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                text = stub_reply(prompt, int(body.get("seed", 0)))
                words = text.split(" ")
                finish = "stop"
                cap = stub.max_tokens_cap or int(body.get("max_tokens", 1 << 30))
                if len(words) > cap:
                    text, finish = " ".join(words[:cap]), "length"
                choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
                if self.path == "/v1/chat/completions":
                    choice["message"] = {"role": "assistant", "content": text}
                else:
                    choice["text"] = text
                self._send(200, {"id": f"cmpl-{n}", "object": "chat.completion", "model": body.get("model"),
                                 "choices": [choice],
                                 "usage": {"prompt_tokens": len(prompt.split()),
                                           "completion_tokens": len(text.split(" "))}})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
