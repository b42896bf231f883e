"""The LM gateway against a provider that fails on purpose.

The provider here is the offline LM's engine with faults in front of it (a paid API is the one thing
that cannot exist in a test); the real-HTTP path is ``test_hosted_lm.py``. Waits go to a recorded
``sleep`` so retry and rate-limit delays are checked without waiting them out.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import dspy
import pytest
from dspy import lm15
from hypothesis import given
from hypothesis import strategies as st

from teleprompt_assets.core.config import LMBudget, LMConfig
from teleprompt_assets.core.gateway import Gateway, LMBudgetExceeded, backoff_s, cache_key, gateway_lm, micro_usd, pipeline_lm
from teleprompt_assets.core.lm import OFFLINE_MODEL, OfflineEngine, offline_lm
from teleprompt_assets.core.lm_store import LMStore
from teleprompt_assets.core.parallel import map_ordered


@dataclass
class Provider:
    """Answers like the offline LM after ``fail_first`` failures of ``error()``; counts what it was sent."""

    fail_first: int = 0
    error: type | None = None
    retry_after: float | None = None
    delay_s: float = 0.0
    jitter_s: float = 0.0
    sent: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _inner: OfflineEngine = field(default_factory=OfflineEngine)
    _rng: random.Random = field(default_factory=lambda: random.Random(7))

    def complete(self, request):
        with self._lock:
            self.sent += 1
            n = self.sent
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            pause = self.delay_s + self._rng.random() * self.jitter_s
        try:
            if pause:
                time.sleep(pause)
            if n <= self.fail_first:
                kwargs = {"retry_after": self.retry_after} if self.retry_after is not None else {}
                raise self.error("injected", **kwargs)
            return self._inner.complete(request)
        finally:
            with self._lock:
                self.in_flight -= 1


def chain(exc: BaseException | None):
    while exc is not None:
        yield exc
        exc = exc.__cause__


def inner(provider: Provider) -> dspy.LM:
    return dspy.LM(OFFLINE_MODEL, engine=provider, cache=False, num_retries=0)


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def ask(lm: dspy.LM, question: str = "Where is my parcel? It never arrived.", **config) -> dspy.Prediction:
    with dspy.context(lm=lm):
        return dspy.Predict("question -> answer")(question=question, config=config) if config else dspy.Predict("question -> answer")(question=question)


def test_a_429_is_retried_after_the_providers_retry_after_and_holds_back_the_process():
    provider, sleeps = Provider(fail_first=2, error=lm15.RateLimitError, retry_after=1.5), Sleeps()
    gateway = Gateway(inner(provider), LMConfig(), None, sleep=sleeps, seed=1)
    lm = dspy.LM(OFFLINE_MODEL, engine=gateway, cache=False, num_retries=0)
    assert ask(lm).answer == ask(offline_lm()).answer
    stats = gateway.stats()
    assert (stats.calls, stats.retries, stats.throttled, provider.sent) == (1, 2, 2, 3)
    assert len(sleeps) == 2 and all(1.5 <= s <= 1.5 * 1.1 * 1.1 for s in sleeps), sleeps  # Retry-After, jittered twice at most


def test_a_5xx_is_retried_with_jittered_exponential_backoff():
    provider, sleeps = Provider(fail_first=3, error=lm15.ServerError), Sleeps()
    gateway = Gateway(inner(provider), LMConfig(backoff_s=0.5), None, sleep=sleeps, seed=3)
    ask(dspy.LM(OFFLINE_MODEL, engine=gateway, cache=False, num_retries=0))
    assert provider.sent == 4 and gateway.stats().throttled == 0
    assert [s <= 0.5 * 2**i for i, s in enumerate(sleeps)] == [True] * 3
    assert len(set(sleeps)) == 3  # jittered, not a fixed schedule


def test_retries_run_out_and_the_error_is_the_providers():
    provider = Provider(fail_first=10, error=lm15.ServerError)
    gateway = Gateway(inner(provider), LMConfig(retries=2), None, sleep=Sleeps())
    with pytest.raises(Exception, match="injected"):
        ask(dspy.LM(OFFLINE_MODEL, engine=gateway, cache=False, num_retries=0))
    assert provider.sent == 3 and gateway.stats().failed == 1


def test_an_error_that_retrying_cannot_fix_is_raised_at_once():
    provider, sleeps = Provider(fail_first=10, error=lm15.AuthError), Sleeps()
    gateway = Gateway(inner(provider), LMConfig(), None, sleep=sleeps)
    with pytest.raises(Exception, match="injected"):
        ask(dspy.LM(OFFLINE_MODEL, engine=gateway, cache=False, num_retries=0))
    assert provider.sent == 1 and sleeps == []


@given(attempt=st.integers(0, 40), base=st.floats(0.01, 10), cap=st.floats(0.5, 120), retry_after=st.none() | st.floats(0, 600), seed=st.integers(0, 2**32))
def test_backoff_stays_within_its_bounds(attempt, base, cap, retry_after, seed):
    delay = backoff_s(attempt, base, cap, retry_after, random.Random(seed))
    if retry_after is None:
        assert 0 <= delay <= min(cap, base * 2**attempt)
    else:
        assert min(cap, retry_after) <= delay <= min(cap, retry_after) * 1.1


def test_the_concurrency_limit_bounds_calls_in_flight():
    provider = Provider(delay_s=0.02)
    lm = gateway_lm(inner(provider), LMConfig(concurrency=3), None)
    questions = [f"question number {i}: where is order {i}?" for i in range(24)]
    map_ordered(lambda q: ask(lm, q), questions, workers=12)
    assert provider.sent == 24 and provider.max_in_flight == 3


def test_answers_keep_the_callers_order_whatever_order_they_arrive_in():
    provider = Provider(jitter_s=0.01)
    lm = gateway_lm(inner(provider), LMConfig(concurrency=8), None)
    questions = [f"Refund for order {i}, please: it arrived broken" if i % 3 else f"Where is parcel {i}?" for i in range(40)]
    side_by_side = map_ordered(lambda q: ask(lm, q).answer, questions, workers=8)
    one_by_one = [ask(offline_lm(), q).answer for q in questions]
    assert side_by_side == one_by_one and provider.max_in_flight > 1


def test_the_first_failure_stops_the_rest():
    started = []

    def work(i: int) -> int:
        started.append(i)
        if i == 3:
            raise ValueError("outage")
        time.sleep(0.01)
        return i

    with pytest.raises(ValueError, match="outage"):
        map_ordered(work, list(range(200)), workers=4)
    assert len(started) < 200


# --- budget ----------------------------------------------------------------------------------


def test_the_budget_stops_before_the_call_that_would_cross_it_across_the_steps_of_a_run(tmp_path):
    store = LMStore(f"sqlite:///{tmp_path / 'state.sqlite'}")
    config = LMConfig(budget=LMBudget(max_calls=3), cache="off")
    step_a = gateway_lm(inner(Provider()), config, store, run_id="run-1")
    step_b = gateway_lm(inner(provider := Provider()), config, store, run_id="run-1")
    other_run = gateway_lm(inner(Provider()), config, store, run_id="run-2")
    ask(step_a, "one"), ask(step_a, "two"), ask(step_b, "three")
    with pytest.raises(Exception, match=r"LM budget of run run-1 reached \(3 of 3 calls spent\).*raise lm.budget") as refused:
        ask(step_b, "four")
    assert any(isinstance(e, LMBudgetExceeded) for e in chain(refused.value))
    assert provider.sent == 1 and step_b.engine.exhausted
    assert ask(other_run, "five").answer  # a budget is per run
    assert store.spend("run-1")[0] == 3


def test_tokens_and_cost_are_settled_from_the_responses_usage(tmp_path):
    store = LMStore(f"sqlite:///{tmp_path / 'state.sqlite'}")
    config = LMConfig(budget=LMBudget(max_tokens=10_000), cache="off", usd_per_1m_input_tokens="0.15", usd_per_1m_output_tokens="0.60")
    lm = gateway_lm(inner(Provider()), config, store, run_id="r")
    ask(lm)
    stats = lm.engine.stats()
    assert stats.input_tokens > 0 and stats.output_tokens > 0
    assert store.spend("r") == (1, stats.input_tokens + stats.output_tokens, micro_usd(stats.input_tokens, stats.output_tokens, config))


def test_a_token_budget_refuses_a_call_whose_estimate_does_not_fit(tmp_path):
    store = LMStore(f"sqlite:///{tmp_path / 'state.sqlite'}")
    lm = gateway_lm(inner(Provider()), LMConfig(budget=LMBudget(max_tokens=500), cache="off"), store, run_id="r")
    with pytest.raises(Exception, match="tokens spent and the next call may take"):
        ask(lm)  # ~1,000 output tokens are reserved when a request sets no max_tokens


@pytest.mark.parametrize(("tokens_in", "tokens_out", "expected"), [(0, 0, 0), (1, 0, 1), (1_000_000, 0, 150_000), (6, 1, 2), (1_000_000, 1_000_000, 750_000)])
def test_cost_is_exact_micro_usd_rounded_up(tokens_in, tokens_out, expected):
    assert micro_usd(tokens_in, tokens_out, LMConfig(usd_per_1m_input_tokens="0.15", usd_per_1m_output_tokens="0.60")) == expected


def test_a_cost_budget_needs_prices():
    with pytest.raises(ValueError, match="max_usd needs lm.usd_per_1m_input_tokens"):
        LMConfig(budget=LMBudget(max_usd="5"))


# --- answer cache ----------------------------------------------------------------------------


def test_an_answer_is_paid_once_and_kept_across_processes(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    provider = Provider()
    first = gateway_lm(inner(provider), LMConfig(cache="on"), LMStore(url))
    answer = ask(first).answer
    assert ask(first).answer == answer and provider.sent == 1
    later = gateway_lm(inner(provider), LMConfig(cache="on"), LMStore(url))  # the next day's run
    assert ask(later).answer == answer and provider.sent == 1
    assert later.engine.stats().reused == 1 and later.engine.stats().calls == 0
    assert ask(later, "A different question?").answer and provider.sent == 2


def test_a_sampled_request_is_never_answered_from_the_cache(tmp_path):
    provider = Provider()
    lm = gateway_lm(inner(provider), LMConfig(cache="on"), LMStore(f"sqlite:///{tmp_path / 's.sqlite'}"))
    ask(lm, temperature=1.0)
    ask(lm, temperature=1.0)
    assert provider.sent == 2 and lm.engine.stats().reused == 0


def test_the_cache_key_is_model_request_and_parameters():
    from dspy.lm15 import Config, Message, Request

    def key(model="m", text="hi", **config):
        return cache_key(model, Request(model=model, messages=(Message.user(text),), config=Config(**config)))

    assert key() == key() and len({key(), key(model="n"), key(text="ho"), key(max_tokens=5)}) == 4
    assert key(temperature=0.0) is not None and key(temperature=0.7) is None


def test_auto_cache_is_on_for_a_hosted_lm_and_off_for_the_offline_lm(tmp_path):
    assert not pipeline_lm(offline_lm(), LMConfig(), tmp_path).engine.cached
    assert pipeline_lm(offline_lm(), LMConfig(cache="on"), tmp_path).engine.cached
    hosted = dspy.LM("openai/some-model", api_base="http://127.0.0.1:9/v1", api_key="k", cache=False, num_retries=0)
    assert pipeline_lm(hosted, LMConfig(), tmp_path).engine.cached
    assert (tmp_path / "lm-state.sqlite").exists()


def test_a_server_that_reports_no_usage_is_charged_the_estimate(tmp_path):
    from dspy.lm15 import Message, Response, TextPart, Usage

    class NoUsage:
        def complete(self, request):
            return Response(id=None, model=OFFLINE_MODEL, message=Message.assistant([TextPart("[[ ## answer ## ]]\nok")]), finish_reason="stop",
                            usage=Usage(input_tokens=None, output_tokens=None, total_tokens=None))

    store = LMStore(f"sqlite:///{tmp_path / 's.sqlite'}")
    lm = gateway_lm(dspy.LM(OFFLINE_MODEL, engine=NoUsage(), cache=False, num_retries=0), LMConfig(budget=LMBudget(max_tokens=10**6), cache="off"), store, "r")
    ask(lm)
    assert store.spend("r")[1] > 0 and lm.engine.stats().input_tokens > 0


def test_callbacks_see_each_call_once():
    from teleprompt_assets.core.usage import Progress, metered

    provider = Provider()
    lm = gateway_lm(inner(provider), LMConfig(), None)
    progress = Progress(lambda line: None, "test")
    with metered(lm, progress) as used:
        for i in range(3):
            ask(lm, f"question {i}?")
    assert progress.calls == provider.sent == used.calls == 3


def test_the_cache_is_per_endpoint(tmp_path):
    store = LMStore(f"sqlite:///{tmp_path / 's.sqlite'}")
    provider = Provider()
    here = dspy.LM(OFFLINE_MODEL, engine=provider, cache=False, num_retries=0)
    ask(gateway_lm(here, LMConfig(cache="on"), store))
    there = Gateway(here, LMConfig(cache="on"), store)
    there.endpoint = f"{OFFLINE_MODEL}@http://another-server/v1"
    ask(dspy.LM(OFFLINE_MODEL, engine=there, cache=False, num_retries=0))
    assert provider.sent == 2


def test_one_process_never_pays_twice_for_one_prompt_even_without_a_store(tmp_path):
    """The offline LM's answers are not stored (cache: auto), yet a portfolio of optimizers and the
    impact ablations ask the same prompts again: the gateway answers those from memory, and two
    threads asking one question at once make one call."""
    provider = Provider(delay_s=0.05)
    lm = gateway_lm(inner(provider), LMConfig(concurrency=8), None)
    gateway = lm.engine
    questions = [f"question {i % 5}: where is parcel {i % 5}?" for i in range(40)]
    answers = map_ordered(lambda q: ask(lm, q).answer, questions, 8)
    assert provider.sent == 5 and gateway.stats().calls == 5 and gateway.stats().reused == 35
    assert answers == [ask(lm, q).answer for q in questions]
    assert ask(lm, "a sampled one", temperature=1.0, rollout_id=1) and ask(lm, "a sampled one", temperature=1.0, rollout_id=1)
    assert provider.sent == 7  # samples are never reused

    off = gateway_lm(inner(provider), LMConfig(cache="off"), None)
    ask(off, questions[0]), ask(off, questions[0])
    assert off.engine.stats().calls == 2 and off.engine.stats().reused == 0
    offline = pipeline_lm(offline_lm(), LMConfig(), tmp_path)
    ask(offline, questions[0]), ask(offline, questions[0])
    assert offline.engine.stats().calls == 1 and offline.engine.stats().reused == 1 and offline.engine.store is None


def test_429s_are_waited_out_whatever_their_number_and_fail_only_past_the_patience():
    """20% 429s failed a run under load: correlated 429s (a provider limiting by load) used up the
    retries meant for faults. A 429 says 'slow down': the call waits, up to rate_limit_patience_s."""
    provider, sleeps = Provider(fail_first=12, error=lm15.RateLimitError, retry_after=1.0), Sleeps()
    gateway = Gateway(inner(provider), LMConfig(retries=2), None, sleep=sleeps, seed=2)
    assert ask(dspy.LM(OFFLINE_MODEL, engine=gateway, cache=False, num_retries=0)).answer == ask(offline_lm()).answer
    assert (provider.sent, gateway.stats().throttled, gateway.stats().failed) == (13, 12, 0)
    assert 12 <= sum(sleeps) <= 12 * 1.1 * 1.1 + 1

    stubborn = Provider(fail_first=1000, error=lm15.RateLimitError, retry_after=30.0)
    patient = Gateway(inner(stubborn), LMConfig(rate_limit_patience_s=100), None, sleep=Sleeps(), seed=2)
    with pytest.raises(Exception, match="injected"):
        ask(dspy.LM(OFFLINE_MODEL, engine=patient, cache=False, num_retries=0))
    assert 3 <= stubborn.sent <= 4 and patient.stats().failed == 1  # 30 s at a time, 100 s of patience
