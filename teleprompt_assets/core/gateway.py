"""Every LM call the pipeline makes passes through one gateway: limits, retries, budget, answer cache.

The gateway is a DSPy engine (``complete(Request) -> Response``) in front of the LM the user named
(:func:`teleprompt_assets.core.lm.build_lm`, which talks HTTP through DSPy's native engine or
LiteLLM). Wrapping at the engine rather than around programs means every caller is covered the same
way: held-out scoring, leave-one-out impact, and whatever calls an optimizer makes on its threads.
In order, a call

1. is answered from the **answer cache** when the same model at the same endpoint already answered
   the same rendered request with the same parameters. A request that asks for a sample
   (``temperature > 0``, as optimizers do for another try) is never cached; one at the provider's
   default temperature is, as DSPy's own cache does: its first answer is the answer. Within one
   process the answers are also kept in memory (unless ``lm.cache: off``), so the optimizer
   portfolio, its dev scoring and the demo-impact ablations never pay twice for one prompt, even
   with the offline LM, whose answers are not stored; two threads asking the same question at
   once make one call;
2. reserves one call and its estimated tokens and cost against the **run's budget**, and stops the
   run with :class:`LMBudgetExceeded` before a call whose reservation does not fit (calls are exact;
   tokens and cost are estimates until the response's usage settles them);
3. takes a slot of the **concurrency limit** (calls in flight in this process) and waits for the
   **rate limit** (requests and tokens per minute, shared through the LM state store);
4. is sent, and retried on 5xx, timeouts and connection errors (``retries`` times) and on 429s (for
   as long as ``rate_limit_patience_s`` of waiting allows) with exponential backoff and full
   jitter; a ``Retry-After`` the provider sends wins, and holds back every thread of the process;
5. settles tokens and cost from the response's ``usage``, and keeps the answer.

What a stage spent is read from :meth:`Gateway.stats` before and after it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage
from dspy.utils.exceptions import is_retryable_lm_error

from teleprompt_assets.core.config import LMConfig
from teleprompt_assets.core.encoding import canonical_json
from teleprompt_assets.core.lm_store import LMStore
from teleprompt_assets.core.rate_limit import RateLimiter

log = logging.getLogger(__name__)

ESTIMATED_OUTPUT_TOKENS = 1_000  # reserved per call when the request sets no max_tokens
RECENT_ANSWERS = 50_000  # answers a process keeps in memory (a few hundred bytes each)


class LMBudgetExceeded(RuntimeError):
    """The run's LM budget would be crossed by the next call: the run stops here, cleanly."""


@dataclasses.dataclass
class GatewayStats:
    """Counters since the gateway was built; subtract two snapshots for what a stage spent. The
    gateway hands out copies, never its own."""

    calls: int = 0  # answered by the LM
    reused: int = 0  # answered from the cache, at no cost
    failed: int = 0  # gave up after retries (or refused by the budget)
    retries: int = 0
    throttled: int = 0  # 429s received
    input_tokens: int = 0
    output_tokens: int = 0
    micro_usd: int = 0
    waited_s: float = 0.0  # held back by the rate limit or a Retry-After

    def __sub__(self, other: GatewayStats) -> GatewayStats:
        return GatewayStats(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in dataclasses.fields(self)})

    @property
    def answers(self) -> int:
        return self.calls + self.reused

    def as_metadata(self) -> dict[str, int | float]:
        return {"lm_calls": self.calls, "lm_answers_reused": self.reused, "lm_failed": self.failed, "lm_retries": self.retries,
                "lm_throttled": self.throttled, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "lm_usd": float(Decimal(self.micro_usd) / 1_000_000), "lm_waited_s": round(self.waited_s, 3)}


def cache_key(model: str, request) -> str | None:
    """The answer's identity: model (with its endpoint), rendered request and parameters. None: not
    cacheable (a sampled request, tools, media, logprobs)."""
    config = request.config
    if config.temperature not in (None, 0, 0.0) or request.tools or config.logprobs is not None:
        return None
    messages = []
    for message in request.messages:
        if not all(isinstance(part, TextPart) for part in message.parts):
            return None
        messages.append([message.role, [part.text for part in message.parts]])
    if isinstance(request.system, str) or request.system is None:
        system = request.system
    elif all(isinstance(part, TextPart) for part in request.system):
        system = [part.text for part in request.system]
    else:
        return None
    params = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "cache" and getattr(config, f.name) not in (None, ())}
    body = canonical_json({"model": model, "system": system, "messages": messages, "params": {k: repr(v) for k, v in params.items()}})
    return hashlib.sha256(body.encode()).hexdigest()


def backoff_s(attempt: int, base_s: float, max_s: float, retry_after: float | None, rng: random.Random) -> float:
    """Delay before retry ``attempt`` (0-based): the provider's Retry-After when it sent one (plus up to
    10% jitter, so waiting threads do not return in lockstep), else full jitter over ``base * 2**attempt``."""
    if retry_after is not None and math.isfinite(retry_after) and retry_after >= 0:
        return min(max_s, retry_after) * (1 + 0.1 * rng.random())
    return rng.uniform(0, min(max_s, base_s * 2 ** min(attempt, 30)))


def micro_usd(input_tokens: int, output_tokens: int, config: LMConfig) -> int:
    """Exact, rounded up: a price per million tokens is a price in micro-USD per token."""
    return math.ceil(input_tokens * config.usd_per_1m_input_tokens + output_tokens * config.usd_per_1m_output_tokens)


def _retry_after(exc: BaseException) -> float | None:
    seen: BaseException | None = exc
    while seen is not None:
        value = getattr(seen, "retry_after", None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        seen = seen.__cause__
    return None


def _is_rate_limit(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if "RateLimit" in type(seen).__name__:
            return True
        seen = seen.__cause__
    return False


def _estimate_tokens(request) -> int:
    words = sum(len(part.text.split()) for m in request.messages for part in m.parts if isinstance(part, TextPart))
    words += len(request.system.split()) if isinstance(request.system, str) else 0
    return math.ceil(words * 4 / 3) + (request.config.max_tokens or ESTIMATED_OUTPUT_TOKENS)


class Gateway:
    """A DSPy engine in front of ``inner`` (any ``dspy.LM``); see the module docstring."""

    def __init__(self, inner: dspy.LM, config: LMConfig, store: LMStore | None, run_id: str | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep, seed: int | None = None,
                 reuse: bool | None = None):
        self.inner, self.config, self.store = inner, config, store
        self.run_id = run_id or f"process-{uuid.uuid4().hex}"
        self.clock, self.sleep = clock, sleep
        self.cached = store is not None and config.cache != "off"
        self.reuse = config.cache != "off" if reuse is None else reuse
        self._recent: OrderedDict[str, dict] = OrderedDict()
        self._inflight: dict[str, threading.Event] = {}
        self.endpoint = f"{inner.model}@{inner.kwargs.get('api_base') or ''}"  # one model served by two servers is two LMs
        self.limiter = None
        if store is not None and (config.requests_per_minute or config.tokens_per_minute):
            self.limiter = RateLimiter(store, self.endpoint, config.requests_per_minute, config.tokens_per_minute)
        self.slots = threading.BoundedSemaphore(config.concurrency)
        self._lock = threading.Lock()
        self._stats = GatewayStats()
        self._cool_until = 0.0
        self._rng = random.Random(seed)
        self.exhausted: str | None = None

    # DSPy reads capability hints from a custom engine: they are the inner LM's.
    @property
    def supports_function_calling(self) -> bool:
        return bool(self.inner.supports_function_calling)

    @property
    def supports_response_schema(self) -> bool:
        return bool(self.inner.supports_response_schema)

    @property
    def supports_reasoning(self) -> bool:
        return bool(self.inner.supports_reasoning)

    def stats(self) -> GatewayStats:
        with self._lock:
            return dataclasses.replace(self._stats)

    def _count(self, **delta) -> None:
        with self._lock:
            self._stats = dataclasses.replace(self._stats, **{k: getattr(self._stats, k) + v for k, v in delta.items()})

    def complete(self, request) -> Response:
        key = cache_key(self.endpoint, request) if self.cached or self.reuse else None
        if key is None:
            return self._answer(request, None)
        while True:
            with self._lock:
                record = self._recent.get(key)
                waiting = self._inflight.get(key) if record is None else None
                if record is None and waiting is None:
                    self._inflight[key] = threading.Event()
            if record is not None:
                self._count(reused=1)
                return _response(record)
            if waiting is None:
                break
            waiting.wait()  # another thread is asking the same question: its answer is this one's
        try:
            if self.cached and (record := self._cached(key)) is not None:
                self._remember(key, record)
                self._count(reused=1)
                return _response(record)
            response = self._answer(request, key)
            if response.finish_reason == "stop" and _text_only(response):
                self._remember(key, _record(response))
            return response
        finally:
            with self._lock:
                self._inflight.pop(key).set()

    def _remember(self, key: str, record: dict) -> None:
        if not self.reuse:
            return
        with self._lock:
            self._recent[key] = record
            self._recent.move_to_end(key)
            while len(self._recent) > RECENT_ANSWERS:
                self._recent.popitem(last=False)

    def _answer(self, request, key: str | None) -> Response:
        """One call to the LM: reserved against the budget, sent with retries, settled, and kept in the store."""
        estimate = _estimate_tokens(request)
        try:
            self._reserve(estimate)
        except LMBudgetExceeded:
            self._count(failed=1)
            raise
        try:
            response = self._send(request, estimate)
        except BaseException:
            with contextlib.suppress(Exception):  # the provider's error is the one to see
                self._settle(estimate, 0, 0)
            self._count(failed=1)
            raise
        usage = response.usage
        if usage is None or (usage.input_tokens is None and usage.output_tokens is None):
            used_in, used_out = estimate, 0  # a server that reports no usage is charged the estimate, not nothing
        else:
            used_in, used_out = int(usage.input_tokens or 0), int(usage.output_tokens or 0)
        self._settle(estimate, used_in, used_out)
        self._count(calls=1, input_tokens=used_in, output_tokens=used_out, micro_usd=micro_usd(used_in, used_out, self.config))
        if key is not None and self.cached and response.finish_reason == "stop" and _text_only(response):
            try:
                self.store.keep_answer(key, self.endpoint, _record(response))
            except Exception as exc:  # an answer paid for is returned even when it cannot be kept
                log.warning("LM answer cache: could not keep an answer (%s: %s)", type(exc).__name__, exc)
        return response

    def _cached(self, key: str) -> dict | None:
        try:
            return self.store.answer(key)
        except Exception as exc:  # the cache is an optimization: a store hiccup is a miss
            log.warning("LM answer cache: lookup failed, calling the LM (%s: %s)", type(exc).__name__, exc)
            return None

    def stream(self, request):
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        self.inner.close()

    # -- budget ---------------------------------------------------------------------------------
    def _reserve(self, estimate: int) -> None:
        budget = self.config.budget
        if self.exhausted:
            raise LMBudgetExceeded(self.exhausted)
        if self.store is None or (budget.max_calls is None and budget.max_tokens is None and budget.max_usd is None):
            return
        cost = self._reserved_usd(estimate)

        def take(calls: int, tokens: int, micro: int) -> tuple[int, int, int]:
            over = []
            if budget.max_calls is not None and calls + 1 > budget.max_calls:
                over.append(f"{calls} of {budget.max_calls} calls spent")
            if budget.max_tokens is not None and tokens + estimate > budget.max_tokens:
                over.append(f"{tokens:,} of {budget.max_tokens:,} tokens spent and the next call may take {estimate:,}")
            if budget.max_usd is not None and micro + cost > budget.max_usd * 1_000_000:
                over.append(f"${Decimal(micro) / 1_000_000} of ${budget.max_usd} spent")
            if over:
                self.exhausted = f"LM budget of run {self.run_id} reached ({'; '.join(over)}): the run stops here; raise lm.budget in teleprompt.yaml to go further"
                raise LMBudgetExceeded(self.exhausted)
            return calls + 1, tokens + estimate, micro + cost

        self.store.update_spend(self.run_id, take)

    def _reserved_usd(self, estimate: int) -> int:
        """The estimate priced at whichever side costs more, at most: the reservation never undercharges."""
        return micro_usd(estimate, 0, self.config) + micro_usd(0, estimate, self.config)

    def _settle(self, estimate: int, used_in: int, used_out: int) -> None:
        budget = self.config.budget
        if self.limiter is not None:
            self.limiter.settle_tokens(estimate, used_in + used_out)
        if self.store is None or (budget.max_calls is None and budget.max_tokens is None and budget.max_usd is None):
            return
        cost = self._reserved_usd(estimate)
        actual = micro_usd(used_in, used_out, self.config)
        self.store.update_spend(self.run_id, lambda calls, tokens, micro: (calls, tokens - estimate + used_in + used_out, micro - cost + actual))

    # -- sending --------------------------------------------------------------------------------
    def _send(self, request, estimate: int) -> Response:
        """Send, retrying what may pass: a 5xx, timeout or lost connection up to ``retries`` times; a
        429 for as long as ``rate_limit_patience_s`` of waiting allows. A 429 is the provider saying
        "slow down", not that something broke: counted against the retries, correlated 429s (a
        provider limiting by load, which a busy machine makes worse) ended runs that would have
        gone through a few seconds later."""
        inner_request = request if request.model == self.inner.model else dataclasses.replace(request, model=self.inner.model)
        failures = throttles = 0
        patience = self.config.rate_limit_patience_s
        while True:
            self._wait_for_turn(estimate if failures + throttles == 0 else 0)
            with self.slots, dspy.context(disable_history=True, callbacks=[], usage_tracker=None):  # the outer LM already reports this call
                try:
                    return self.inner(inner_request)
                except Exception as exc:
                    if not is_retryable_lm_error(exc):
                        raise
                    throttled = _is_rate_limit(exc)
                    retry_after = _retry_after(exc)
                    if throttled:
                        delay = backoff_s(throttles, self.config.backoff_s, self.config.backoff_max_s, retry_after, self._rng)
                        if delay > patience:
                            raise
                        patience -= delay
                        throttles += 1
                    else:
                        if failures >= self.config.retries:
                            raise
                        delay = backoff_s(failures, self.config.backoff_s, self.config.backoff_max_s, retry_after, self._rng)
                        failures += 1
            self._count(retries=1, throttled=int(throttled))
            if throttled:
                with self._lock:
                    self._cool_until = max(self._cool_until, self.clock() + delay)
            else:
                self._pause(delay)

    def _wait_for_turn(self, tokens: int) -> None:
        with self._lock:
            cooling = self._cool_until - self.clock()
            jitter = 1 + 0.1 * self._rng.random()  # threads held back by one Retry-After do not return at once
        wait = max(0.0, cooling * jitter)
        if self.limiter is not None:
            wait = max(wait, self.limiter.acquire(tokens, self.clock()))
        self._pause(wait)

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self._count(waited_s=seconds)
            self.sleep(seconds)


def _text_only(response: Response) -> bool:
    return all(isinstance(part, TextPart) for part in response.message.parts)


def _record(response: Response) -> dict:
    usage = response.usage
    return {"text": "".join(p.text for p in response.message.parts), "model": response.model, "finish_reason": response.finish_reason,
            "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}


def _response(record: dict) -> Response:
    """A cached answer, as the LM gave it; its usage is zero because nobody paid for it this time."""
    return Response(id=None, model=record["model"], message=Message.assistant([TextPart(record["text"])]), finish_reason=record["finish_reason"],
                    usage=Usage(input_tokens=0, output_tokens=0, total_tokens=0))


def gateway_lm(inner: dspy.LM, config: LMConfig, store: LMStore | None, run_id: str | None = None, reuse: bool | None = None) -> dspy.LM:
    """``inner`` behind a gateway, as a ``dspy.LM`` carrying the same model name."""
    return dspy.LM(inner.model, engine=Gateway(inner, config, store, run_id, reuse=reuse), cache=False, num_retries=0)


def gateway_of(lm: dspy.LM) -> Gateway | None:
    engine = getattr(lm, "engine", None)
    return engine if isinstance(engine, Gateway) else None


def pipeline_lm(inner: dspy.LM, config: LMConfig, home: Path, run_id: str | None = None) -> dspy.LM:
    """The gateway a pipeline step calls its LM through. The state store is opened only when
    something needs it: the answer cache (on by default for a hosted LM, off for the offline LM,
    whose answers cost nothing to recompute, so only its in-process reuse is on), a rate limit or a budget."""
    from teleprompt_assets.core.lm import is_offline
    from teleprompt_assets.core.lm_store import default_url

    budget = config.budget
    cached = config.cache == "on" or (config.cache == "auto" and not is_offline(inner))
    needed = cached or config.requests_per_minute or config.tokens_per_minute or any(v is not None for v in (budget.max_calls, budget.max_tokens, budget.max_usd))
    store = LMStore(config.store_url or default_url(home)) if needed else None
    settings = config if cached else config.model_copy(update={"cache": "off"})
    return gateway_lm(inner, settings, store, run_id, reuse=config.cache != "off")
