"""The OpenAI-compatible LM server: answers as the offline LM does, over real HTTP, and fails like a provider.

Both of DSPy's routes for ``dspy.LM("openai/<model>", api_base=...)`` are exercised: the default
``engine="auto"`` (DSPy's native ``openai-chat`` provider) and ``engine="litellm"``. What DSPy raises
for each provider failure is pinned here, because retry policies elsewhere depend on it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import dspy
import httpx
import pytest
from dspy.utils.exceptions import LMRateLimitError, LMServerError, LMTimeoutError, LMTransportError, is_retryable_lm_error

from teleprompt_assets.core.lm import offline_lm
from teleprompt_assets.samples.lm_server import Faults, serve
from teleprompt_assets_tests.conftest import REPO

ENGINES = ["auto", "litellm"]
QUESTION = "Where is my parcel? It left the warehouse on Monday."
DEMOS = [
    dspy.Example(question="Where is my parcel? It left the depot on Friday.", answer="Your parcel is on its way; it left the depot on Friday."),
    dspy.Example(question="How do I reset my password?", answer="Use the 'Forgot password' link on the sign-in page."),
]


CLIENT = httpx.Client(timeout=10, limits=httpx.Limits(max_connections=32))


def chat(base_url: str, content, **extra) -> httpx.Response:
    body = {"model": "test-model", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}], **extra}
    return CLIENT.post(f"{base_url}/chat/completions", json=body, headers={"Authorization": "Bearer k"})


def remote_lm(base_url: str, engine: str, **kwargs) -> dspy.LM:
    return dspy.LM("openai/test-model", api_base=base_url, api_key="k", cache=False, num_retries=0, engine=engine, **kwargs)


def predict(lm: dspy.LM, adapter=None, demos=()) -> dspy.Prediction:
    program = dspy.Predict("question -> answer")
    program.demos = list(demos)
    with dspy.context(lm=lm, adapter=adapter):
        return program(question=QUESTION)


def failure(lm: dspy.LM) -> Exception:
    with pytest.raises(Exception) as info:
        predict(lm)
    return info.value


def causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it was raised from (``__cause__``), or else during (``__context__``), down to the bottom."""
    chain = []
    while exc is not None and len(chain) < 10:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


# --- the wire format -----------------------------------------------------------------------------


def test_raw_http_gives_a_chat_completion_whose_usage_adds_up():
    with serve(model="served-model") as server:
        response = chat(server.base_url, [{"type": "text", "text": "Hello there. Second sentence."}])
        models = httpx.get(f"{server.base_url}/models").json()
        stats = httpx.get(server.base_url.removesuffix("/v1") + "/stats").json()
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-") and isinstance(body["created"], int)
    assert body["model"] == "test-model"  # the request's model, echoed
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    text = choice["message"]["content"]
    assert text.endswith("[[ ## completed ## ]]")
    usage = body["usage"]
    assert usage["prompt_tokens"] == len("Be brief. Hello there. Second sentence.".split())
    assert usage["completion_tokens"] == len(text.split()) > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert models["data"][0]["id"] == "served-model"
    assert stats["requests"] == stats["answered"] == 1
    assert (stats["prompt_tokens"], stats["completion_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])


def test_keep_alive_serves_many_requests_on_one_connection():
    with serve() as server, httpx.Client(timeout=10) as client:
        peers = set()
        for _ in range(5):
            with client.stream("POST", f"{server.base_url}/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}) as response:
                peers.add(response.extensions["network_stream"].get_extra_info("client_addr"))
                response.read()
                assert response.status_code == 200
    assert len(peers) == 1


@pytest.mark.parametrize("adapter", [None, dspy.JSONAdapter()], ids=["chat-adapter", "json-adapter"])
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("demos", [(), DEMOS], ids=["zero-shot", "demos"])
def test_answers_equal_the_in_process_offline_lm(engine, adapter, demos):
    want = predict(offline_lm(), adapter, demos)
    with serve() as server:
        got = predict(remote_lm(server.base_url, engine), adapter, demos)
        stats = server.stats()
    assert got == want and got.answer
    assert got.answer == (DEMOS[0].answer if demos else "Where is my parcel?")
    assert stats["answered"] >= 1 and stats["throttled"] == stats["errors"] == stats["rejected"] == 0


# --- provider failures, as DSPy sees them --------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_a_429_burst_raises_a_rate_limit_error_carrying_retry_after(engine):
    with serve(faults=Faults(throttle_every=3, throttle_burst=2, retry_after_s=2.5)) as server:
        lm = remote_lm(server.base_url, engine)
        assert predict(lm).answer and predict(lm).answer  # requests 1 and 2
        exc = failure(lm)  # request 3 starts the burst
        again = failure(lm)  # request 4 is in it
        assert predict(lm).answer  # request 5 is past it
        stats = server.stats()
    assert stats["requests"] == 5 and stats["throttled"] == 2  # num_retries=0: neither engine retried underneath
    # DSPy projects every engine's error onto its public type, with the lm15 error as the direct cause.
    assert type(exc) is LMRateLimitError and type(again) is LMRateLimitError
    assert exc.status == 429 and exc.retry_after == 2.5  # read from the Retry-After header
    assert is_retryable_lm_error(exc)
    chain = causes(exc)
    assert f"{type(chain[1]).__module__}.{type(chain[1]).__name__}" == "dspy._vendor.lm15.errors.RateLimitError" and chain[1].retry_after == 2.5
    if engine == "litellm":  # below that, LiteLLM's and the OpenAI SDK's errors: no retry_after attribute, only the response's header
        names = [f"{type(e).__module__}.{type(e).__name__}" for e in chain[2:]]
        assert names == ["litellm.exceptions.RateLimitError", "litellm.llms.openai.common_utils.OpenAIError", "openai.RateLimitError", "httpx.HTTPStatusError"]
        assert chain[1].__cause__ is chain[2]  # raised from LiteLLM's error; the ones below are its __context__
        assert all(getattr(e, "retry_after", None) is None for e in chain[2:])
        assert chain[2].response.headers["retry-after"] == "2.5"
    else:
        assert len(chain) == 2


def test_throttling_counts_are_deterministic():
    with serve(faults=Faults(throttle_every=5, throttle_burst=2, retry_after_s=0.25)) as server:
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: chat(server.base_url, "hi"), range(40)))
        stats = server.stats()
    assert stats["requests"] == 40 and stats["throttled"] == 15 and stats["answered"] == 25  # requests 5, 6, 10, 11, ..., 35, 36 and 40
    throttled = [r for r in statuses if r.status_code == 429]
    assert len(throttled) == 15
    assert throttled[0].headers["retry-after"] == "0.25" and throttled[0].headers["x-ratelimit-remaining-requests"] == "0"
    assert throttled[0].json()["error"]["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize("status", [500, 503])
@pytest.mark.parametrize("engine", ENGINES)
def test_a_5xx_raises_a_retryable_server_error(engine, status):
    with serve(faults=Faults(error_every=1, error_status=status)) as server:
        exc = failure(remote_lm(server.base_url, engine))
        stats = server.stats()
    assert type(exc) is LMServerError and exc.status == status and exc.retry_after is None
    assert is_retryable_lm_error(exc)
    assert f"{type(exc.__cause__).__module__}.{type(exc.__cause__).__name__}" == "dspy._vendor.lm15.errors.ServerError"
    assert stats["requests"] == stats["errors"] == 1  # num_retries=0: neither engine retried underneath


@pytest.mark.parametrize("engine", ENGINES)
def test_a_timeout_is_retryable_but_each_engine_names_it_differently(engine):
    with serve(faults=Faults(latency_ms=1000)) as server:
        started = time.monotonic()
        exc = failure(remote_lm(server.base_url, engine, timeout=0.2))
        elapsed = time.monotonic() - started
    assert elapsed < 0.9
    assert is_retryable_lm_error(exc)
    if engine == "auto":  # the native engine calls a read timeout a transport failure
        assert type(exc) is LMTransportError and exc.status is None
    else:  # LiteLLM maps it to HTTP 408
        assert type(exc) is LMTimeoutError and exc.status == 408


def test_random_429s_and_5xx_follow_their_rates_and_the_request_numbers_alone():
    """A provider's background rate: each request draws from (seed, n), so two servers with the same
    seed fault the same request numbers, whatever the order requests arrive in."""
    faults = Faults(throttle_rate=0.2, error_rate=0.05, retry_after_s=1, seed=3)
    runs = []
    for threads in (1, 8):
        with serve(faults=faults) as server, ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda _: chat(server.base_url, "hi"), range(400)))
            runs.append(server.stats())
    assert runs[0] == runs[1] | {"max_in_flight": runs[0]["max_in_flight"]}
    stats = runs[0]
    assert stats["requests"] == 400 and stats["throttled"] + stats["errors"] + stats["answered"] == 400
    assert 55 <= stats["throttled"] <= 105 and 8 <= stats["errors"] <= 35, stats  # 80 and 20 expected
    with pytest.raises(ValueError, match="throttle_rate must be a probability"):
        Faults(throttle_rate=1.5)


def test_errors_every_nth_request():
    with serve(faults=Faults(error_every=3, error_status=503)) as server:
        codes = [chat(server.base_url, "hi").status_code for _ in range(9)]
    assert codes == [200, 200, 503] * 3
    assert server.stats()["errors"] == 3


def test_outage_switched_on_and_off_through_control():
    with serve() as server:
        control = server.base_url.removesuffix("/v1") + "/control"
        assert chat(server.base_url, "hi").status_code == 200
        assert httpx.post(control, json={"outage": True}).json()["outage"] is True
        down = chat(server.base_url, "hi")
        assert server.faults.outage
        assert httpx.post(control, json={"outage": False}).status_code == 200
        up = chat(server.base_url, "hi")
        bad = httpx.post(control, json={"latency_ms": -1})
        unknown = httpx.post(control, json={"no_such_fault": 1})
        assert httpx.post(control, json={"reset_stats": True}).status_code == 200
        after_reset = server.stats()
    assert down.status_code == 503 and down.json()["error"]["type"] == "server_error"
    assert up.status_code == 200
    assert bad.status_code == unknown.status_code == 400 and "error" in bad.json()
    assert after_reset["requests"] == 0


def test_the_python_api_changes_faults_at_run_time():
    with serve() as server:
        server.set_faults(throttle_every=1, retry_after_s=3)
        throttled = chat(server.base_url, "hi")
        server.set_faults(throttle_every=0)
        assert chat(server.base_url, "hi").status_code == 200
        with pytest.raises(ValueError):
            server.set_faults(throttle_burst=-1)
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "3"


# --- the request's shape -------------------------------------------------------------------------


def test_api_key_is_required_when_configured():
    with serve(api_key="secret") as server:
        url = f"{server.base_url}/chat/completions"
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        missing = httpx.post(url, json=body)
        wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer nope"})
        right = httpx.post(url, json=body, headers={"Authorization": "Bearer secret"})
        lm_wrong = remote_lm(server.base_url, "auto")  # api_key="k"
        exc = failure(lm_wrong)
    assert missing.status_code == wrong.status_code == 401 and right.status_code == 200
    assert missing.json()["error"]["code"] == "invalid_api_key"
    assert type(exc).__name__ == "LMAuthError" and not is_retryable_lm_error(exc)


def test_streaming_and_malformed_json_are_rejected_with_an_openai_error():
    with serve() as server, httpx.Client(timeout=10) as client:
        url = f"{server.base_url}/chat/completions"
        stream = client.post(url, json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
        malformed = client.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
        not_messages = client.post(url, json={"model": "m", "messages": "hi"})
        image = client.post(url, json={"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})
        still_fine = client.post(url, json={"messages": [{"role": "user", "content": "hi"}]})  # same connection, still in step
        stats = server.stats()
    for response in (stream, malformed, not_messages, image):
        assert response.status_code == 400
        error = response.json()["error"]
        assert set(error) >= {"message", "type", "code"} and error["type"] == "invalid_request_error"
    assert stream.json()["error"]["code"] == "stream_unsupported" and malformed.json()["error"]["code"] == "invalid_json"
    assert still_fine.status_code == 200
    assert stats["rejected"] == 4 and stats["answered"] == 1


def test_concurrent_requests_wait_their_latency_in_parallel():
    with serve(faults=Faults(latency_ms=300)) as server:
        with ThreadPoolExecutor(16) as pool:
            started = time.monotonic()
            codes = list(pool.map(lambda _: chat(server.base_url, "hi").status_code, range(16)))
            elapsed = time.monotonic() - started
        stats = server.stats()
    assert codes == [200] * 16
    assert 0.3 <= elapsed < 1.5, elapsed  # serially it would take 4.8 s
    assert stats["max_in_flight"] >= 8 and stats["in_flight"] == 0


def test_dspy_calls_in_parallel_through_both_engines():
    with serve(faults=Faults(latency_ms=300)) as server:
        for engine in ENGINES:
            program = dspy.Predict("question -> answer")
            program.set_lm(remote_lm(server.base_url, engine))  # dspy.context does not reach the pool's threads
            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda i, program=program: program(question=f"question {i}. more").answer, range(8)))
            elapsed = time.monotonic() - started
            assert answers == [f"question {i}." for i in range(8)]
            assert elapsed < 1.5, (engine, elapsed)
        assert server.stats()["max_in_flight"] >= 4


# --- the command line ----------------------------------------------------------------------------


@pytest.mark.e2e  # starts the server as its own process
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "term"])
def test_cli_prints_its_url_serves_and_exits_cleanly_on_a_signal(signum):
    cmd = [sys.executable, "-m", "teleprompt_assets.samples.lm_server", "--port", "0", "--latency-ms", "10", "--throttle-every", "0", "--api-key", "KEY"]
    # Started with SIGINT ignored, as a non-interactive shell starts a background job: Ctrl-C must still stop it.
    ignore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ignore_sigint)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1"), (url, proc.stderr.read() if proc.poll() is not None else "")
        response = httpx.post(f"{url}/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}, headers={"Authorization": "Bearer KEY"}, timeout=10)
        assert response.status_code == 200 and json.loads(response.text)["object"] == "chat.completion"
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and out == ""


@pytest.mark.e2e
def test_cli_rejects_bad_arguments_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "teleprompt_assets.samples.lm_server", "--throttle-every", "-1"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith("throttle_every must be an integer >= 0, got -1")
