"""An OpenAI-compatible HTTP server that answers with the offline LM, and fails like a provider.

Why it exists: the pipeline talks to hosted LMs (OpenAI, vLLM, Ollama) over HTTP, and what goes
wrong there (latency, bursts of HTTP 429 with ``Retry-After``, 5xx errors, a full outage, connection
pooling, token usage) never happens to the in-process offline LM. This server stands in for such a
provider over real HTTP on 127.0.0.1, with the standard library only, so tests and benchmarks can
exercise DSPy's real client stack (LiteLLM and DSPy's native engine) without a network or a GPU.

It answers with the offline learner of :mod:`teleprompt_assets.core.lm` (``read_prompt``,
``answer``, ``render``/``render_json``), so every answer is identical to the one the in-process
offline LM gives for the same prompt; only the transport and its failures differ.

Endpoints:

- ``POST /v1/chat/completions`` (also ``/chat/completions``): OpenAI chat completions, no streaming.
  Both of DSPy's routes for ``dspy.LM("openai/<model>", api_base=...)`` call it: the default
  ``engine="auto"`` (DSPy's native ``openai-chat`` provider) and ``engine="litellm"``.
- ``GET /v1/models``, ``GET /stats`` (counters as JSON), ``POST /control`` (a JSON object of
  :class:`Faults` fields, changed at run time, e.g. ``{"outage": true}``; ``{"reset_stats": true}``
  zeroes the counters).

Point the pipeline at it::

    python -m teleprompt_assets.samples.lm_server --port 8000 --latency-ms 300 --throttle-every 50
    # prints: http://127.0.0.1:8000/v1
    TELEPROMPT_LM=openai/nearest-demo TELEPROMPT_LM_API_BASE=http://127.0.0.1:8000/v1 TELEPROMPT_LM_API_KEY=KEY teleprompt ...

or, in Python::

    with serve(faults=Faults(latency_ms=300)) as server:
        lm = dspy.LM("openai/nearest-demo", api_base=server.base_url, api_key="k", cache=False)

What DSPy 3.4 makes of the faults, on both routes (pinned in ``test_lm_server.py``): a 429 raises
``dspy.utils.exceptions.LMRateLimitError`` whose ``retry_after`` is the ``Retry-After`` header's
value; a 5xx or an outage raises ``LMServerError``; all of them are ``is_retryable_lm_error``.

Fault counting is deterministic: each completion request takes the next number ``n`` under a lock,
and whether it is throttled or fails depends only on ``n`` and the faults in force.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from teleprompt_assets.core.lm import SIMILARITY_THRESHOLD, answer, read_prompt, render, render_json

DEFAULT_MODEL = "nearest-demo"
CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
SYSTEM_ROLES = ("system", "developer")
RATE_LIMIT_REQUESTS = 10_000  # what the x-ratelimit-limit-requests header announces


@dataclass
class Faults:
    """Provider behaviour to simulate. Request numbers ``n`` start at 1.

    - ``latency_ms``: each answered request waits this long (concurrently: one thread per request).
    - ``throttle_every``: 0 is off; request ``n`` with ``n % throttle_every == 0`` starts a burst of
      ``throttle_burst`` consecutive requests (it included) answered 429 with ``Retry-After:
      retry_after_s``.
    - ``error_every``: 0 is off; request ``n`` with ``n % error_every == 0`` (not throttled) gets
      ``error_status`` (500 or 503) with an error JSON.
    - ``throttle_rate``, ``error_rate``: each request not already throttled by ``throttle_every`` is
      answered 429 with probability ``throttle_rate``, else ``error_status`` with probability
      ``error_rate``; the draw is a function of ``n`` and ``seed`` alone, so a run sees the same
      faults at the same request numbers whatever the timing (a provider's ordinary background rate).
    - ``outage``: every request gets 503.
    """

    latency_ms: float = 0.0
    throttle_every: int = 0
    throttle_burst: int = 1
    retry_after_s: float = 1.0
    error_every: int = 0
    error_status: int = 500
    throttle_rate: float = 0.0
    error_rate: float = 0.0
    seed: int = 0
    outage: bool = False

    def __post_init__(self) -> None:
        for name in ("latency_ms", "retry_after_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        for name in ("throttle_every", "throttle_burst", "error_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("throttle_rate", "error_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        if self.error_status not in (500, 502, 503, 504):
            raise ValueError(f"error_status must be 500, 502, 503 or 504, got {self.error_status!r}")
        if not isinstance(self.outage, bool):
            raise ValueError(f"outage must be true or false, got {self.outage!r}")


# requests = answered + throttled + errors + rejected (400 and 401 answers to completion requests)
_COUNTERS = ("requests", "answered", "throttled", "errors", "rejected", "prompt_tokens", "completion_tokens", "max_in_flight")


class _Reject(Exception):
    """An HTTP error answer: status, OpenAI-style error body, extra headers."""

    def __init__(self, status: int, message: str, type_: str, code: str | None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.headers = status, message, type_, code, headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": None, "code": self.code}}


def _text(content: Any) -> str:
    """A message's content as text: a string, or a list of text parts (joined as lm15's ``Message.text`` does)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise _Reject(400, f"Unsupported content part {kind!r}: this server reads text only.", "invalid_request_error", "unsupported_content")
        return "\n".join(texts)
    raise _Reject(400, "Message content must be a string or a list of text parts.", "invalid_request_error", "invalid_content")


def _split_messages(messages: Any) -> tuple[str, list[tuple[str, str]]]:
    """(system text, [(role, text)] turns) from an OpenAI ``messages`` list."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise _Reject(400, "'messages' must be a list of message objects.", "invalid_request_error", "invalid_messages")
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for message in messages:
        role = message.get("role")
        if not isinstance(role, str):
            raise _Reject(400, "Every message needs a 'role'.", "invalid_request_error", "invalid_messages")
        text = _text(message.get("content"))
        if role in SYSTEM_ROLES:
            system.append(text)
        else:
            turns.append((role, text))
    return "\n".join(system), turns


def _words(text: str) -> int:
    return len(text.split())


class LMServer(ThreadingHTTPServer):
    """The HTTP server; :func:`serve` starts one in a daemon thread."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, model: str = DEFAULT_MODEL, faults: Faults | None = None, api_key: str | None = None, threshold: float = SIMILARITY_THRESHOLD):
        super().__init__((host, port), _Handler)
        self.model = model
        self.api_key = api_key
        self.threshold = threshold
        self._faults = dataclasses.replace(faults) if faults is not None else Faults()
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._n = 0
        self._burst_left = 0
        self._in_flight = 0
        self._connections: set[socket.socket] = set()
        self._thread: threading.Thread | None = None

    # --- Python API ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.server_address[0]}:{self.port}/v1"

    @property
    def faults(self) -> Faults:
        with self._lock:
            return dataclasses.replace(self._faults)

    def set_faults(self, **changes: Any) -> Faults:
        """Change some fault settings at run time; unknown names raise ``TypeError``, bad values ``ValueError``."""
        with self._lock:
            self._faults = dataclasses.replace(self._faults, **changes)
            if not self._faults.throttle_every:
                self._burst_left = 0
            return dataclasses.replace(self._faults)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self._counts, "in_flight": self._in_flight}

    def reset_stats(self) -> None:
        """Zero the counters and restart request numbering (faults are kept)."""
        with self._lock:
            self._counts = dict.fromkeys(_COUNTERS, 0)
            self._n = 0
            self._burst_left = 0

    def start(self) -> LMServer:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, name=f"lm-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection (clients' pooled keep-alive sockets included)."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server_close()

    # --- request accounting ----------------------------------------------------------------------

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for key, delta in deltas.items():
                self._counts[key] += delta

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._counts["max_in_flight"] = max(self._counts["max_in_flight"], self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _admit(self) -> Faults:
        """Number this request, and raise the fault it draws, if any; else return the faults in force."""
        with self._lock:
            self._n += 1
            n, faults = self._n, self._faults
            self._counts["requests"] += 1
            if faults.outage:
                self._counts["errors"] += 1
                raise _Reject(503, "The service is unavailable (simulated outage).", "server_error", "service_unavailable")
            if faults.throttle_every and n % faults.throttle_every == 0:
                self._burst_left = faults.throttle_burst
            draw = random.Random(f"{faults.seed}:{n}").random() if faults.throttle_rate or faults.error_rate else 1.0
            if self._burst_left > 0 or draw < faults.throttle_rate:
                self._burst_left = max(self._burst_left - 1, 0)
                self._counts["throttled"] += 1
                retry = f"{faults.retry_after_s:g}"
                headers = {
                    "Retry-After": retry,
                    "x-ratelimit-limit-requests": str(RATE_LIMIT_REQUESTS),
                    "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-reset-requests": f"{retry}s",
                }
                raise _Reject(429, f"Rate limit reached for requests (simulated). Please try again in {retry}s.", "requests", "rate_limit_exceeded", headers)
            if (faults.error_every and n % faults.error_every == 0) or draw < faults.throttle_rate + faults.error_rate:
                self._counts["errors"] += 1
                status = faults.error_status
                raise _Reject(status, f"The server had an error while processing your request (simulated {status}).", "server_error", "service_unavailable" if status == 503 else "server_error")
            return faults

    def _answer(self, system: str, turns: list[tuple[str, str]]) -> tuple[str, int, int]:
        view = read_prompt(system, turns)
        fields = answer(view, self.threshold)
        text = render_json(fields) if view.json_answer else render(fields)
        prompt_tokens = sum(_words(t) for _, t in turns) + _words(system)
        return text, prompt_tokens, _words(text)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "teleprompt-lm-server/1"
    server: LMServer

    def setup(self) -> None:
        super().setup()
        with self.server._lock:
            self.server._connections.add(self.connection)

    def finish(self) -> None:
        with self.server._lock:
            self.server._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    # --- plumbing --------------------------------------------------------------------------------

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _read_body(self) -> bytes:
        """The request body, read in full before anything is answered so a kept-alive connection stays in step."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise _Reject(400, "Invalid Content-Length.", "invalid_request_error", "invalid_body")
        return self.rfile.read(length) if length else b""

    @staticmethod
    def _json(raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise _Reject(400, f"We could not parse the JSON body of your request: {exc}", "invalid_request_error", "invalid_json") from None
        if not isinstance(body, dict):
            raise _Reject(400, "The request body must be a JSON object.", "invalid_request_error", "invalid_json")
        return body

    def _authorized(self) -> bool:
        key = self.server.api_key
        return not key or self.headers.get("Authorization", "") == f"Bearer {key}"

    # --- routes ----------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/stats":
            self._send(200, self.server.stats())
        elif path in ("/v1/models", "/models"):
            if not self._authorized():
                self._send(401, _unauthorized().body())
                return
            self._send(200, {"object": "list", "data": [{"id": self.server.model, "object": "model", "created": 0, "owned_by": "teleprompt"}]})
        else:
            self._send(404, _not_found(path).body())

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            raw = self._read_body()
            if path == "/control":
                status, body, headers = self._control(raw)
            elif path in CHAT_PATHS:
                status, body, headers = self._complete(raw)
            else:
                raise _not_found(path)
        except _Reject as reject:
            status, body, headers = reject.status, reject.body(), reject.headers
        self._send(status, body, headers)

    def _control(self, raw: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        body = self._json(raw)
        reset = body.pop("reset_stats", False)
        try:
            faults = self.server.set_faults(**body)
        except (TypeError, ValueError) as exc:
            raise _Reject(400, f"Bad fault settings: {exc}", "invalid_request_error", "invalid_faults") from None
        if reset:
            self.server.reset_stats()
        return 200, dataclasses.asdict(faults), {}

    def _complete(self, raw: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        """The answer to one completion request; the in-flight count covers it up to, not including, sending."""
        server = self.server
        server._enter()
        try:
            try:
                if not self._authorized():
                    raise _unauthorized()
                body = self._json(raw)
                if body.get("stream"):
                    raise _Reject(400, 'Streaming is not supported by this server; send "stream": false.', "invalid_request_error", "stream_unsupported")
                system, turns = _split_messages(body.get("messages"))
            except _Reject:
                server._count(requests=1, rejected=1)
                raise
            faults = server._admit()
            if faults.latency_ms:
                time.sleep(faults.latency_ms / 1000)
            try:
                text, prompt_tokens, completion_tokens = server._answer(system, turns)
            except Exception as exc:  # a bug in the learner answers 500 like a provider, not a dropped connection
                server._count(errors=1)
                raise _Reject(500, f"The offline LM failed: {type(exc).__name__}: {exc}", "server_error", "server_error") from None
            model = body.get("model") if isinstance(body.get("model"), str) else server.model
            server._count(answered=1, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
            return 200, _chat_body(model, text, prompt_tokens, completion_tokens), {}
        finally:
            server._leave()


def _unauthorized() -> _Reject:
    return _Reject(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")


def _not_found(path: str) -> _Reject:
    return _Reject(404, f"Unknown path {path!r}.", "invalid_request_error", "unknown_url")


def _chat_body(model: str, text: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
    }


@contextmanager
def serve(host: str = "127.0.0.1", port: int = 0, model: str = DEFAULT_MODEL, faults: Faults | None = None, api_key: str | None = None, threshold: float = SIMILARITY_THRESHOLD) -> Iterator[LMServer]:
    """Run an :class:`LMServer` in a daemon thread for the ``with`` block; ``port=0`` picks a free port."""
    server = LMServer(host, port, model=model, faults=faults, api_key=api_key, threshold=threshold).start()
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m teleprompt_assets.samples.lm_server", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the model name /v1/models lists (answers echo the request's)")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--throttle-every", type=int, default=0, help="every Nth request starts a burst of 429s (0: off)")
    parser.add_argument("--throttle-burst", type=int, default=1)
    parser.add_argument("--retry-after-s", type=float, default=1.0)
    parser.add_argument("--error-every", type=int, default=0, help="every Nth request gets --error-status (0: off)")
    parser.add_argument("--error-status", type=int, default=500)
    parser.add_argument("--throttle-rate", type=float, default=0.0, help="probability of a 429 per request, drawn from --seed and the request number")
    parser.add_argument("--error-rate", type=float, default=0.0, help="probability of --error-status per request (after the 429 draw)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--outage", action="store_true")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    args = parser.parse_args(argv)
    try:
        faults = Faults(
            latency_ms=args.latency_ms,
            throttle_every=args.throttle_every,
            throttle_burst=args.throttle_burst,
            retry_after_s=args.retry_after_s,
            error_every=args.error_every,
            error_status=args.error_status,
            throttle_rate=args.throttle_rate,
            error_rate=args.error_rate,
            seed=args.seed,
            outage=args.outage,
        )
    except ValueError as exc:
        parser.error(str(exc))
    try:
        server = LMServer(args.host, args.port, model=args.model, faults=faults, api_key=args.api_key)
    except OSError as exc:
        parser.exit(1, f"{parser.prog}: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}\n")

    def stop(signum, frame):
        raise KeyboardInterrupt

    # A process started in the background by a non-interactive shell inherits SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, stop)
    print(server.base_url, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
