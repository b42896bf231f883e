"""Per-example LM work, side by side, with results in the examples' order.

A hosted LM spends nearly all of a call waiting on the network, so the calls of a stage run on a
pool of threads (the gateway bounds how many are in flight). Results are collected by position,
never by completion order, so a report, a score list or an attestation built from them is the same
whatever the concurrency. DSPy's settings (the LM, callbacks) live in context variables, which a
new thread does not inherit: each task runs in a copy of the caller's context.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_ordered(fn: Callable[[T], R], items: Sequence[T], workers: int, done: Callable[[int], None] | None = None) -> list[R]:
    """``[fn(x) for x in items]``, up to ``workers`` at a time. The first failure cancels what has not
    started and is raised once the running calls return. ``done(n)`` is called as results arrive."""
    if workers <= 1 or len(items) <= 1:
        results = []
        for item in items:
            results.append(fn(item))
            if done is not None:
                done(len(results))
        return results
    with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="lm-call") as pool:
        futures = [pool.submit(contextvars.copy_context().run, fn, item) for item in items]
        try:
            for finished, future in enumerate(as_completed(futures), 1):
                future.result()
                if done is not None:
                    done(finished)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return [future.result() for future in futures]
