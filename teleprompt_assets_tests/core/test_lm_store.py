"""The LM state store on sqlite (one machine) and on PostgreSQL (a deployment's shared store)."""

from __future__ import annotations

import threading

import pytest

from teleprompt_assets.core.lm_store import LMStore


def exercise(store: LMStore) -> None:
    """What the gateway does with a store, with threads racing on one budget row and one bucket."""
    assert store.answer("k1") is None
    store.keep_answer("k1", "openai/m", {"text": "billing"})
    store.keep_answer("k1", "openai/m", {"text": "a second writer loses"})
    assert store.answer("k1") == {"text": "billing"}

    def spend(calls: int, tokens: int, micro: int) -> tuple[int, int, int]:
        if calls >= 50:
            raise RuntimeError("over budget")
        return calls + 1, tokens + 10, micro + 3

    refused = []

    def worker() -> None:
        for _ in range(20):
            try:
                store.update_spend("run-a", spend)
            except RuntimeError:
                refused.append(1)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.spend("run-a") == (50, 500, 150) and len(refused) == 30
    assert store.spend("run-b") == (0, 0, 0)

    taken = store.update_bucket("openai/m:requests", 5.0, lambda level, updated: (level - 1, 1.0, level))
    assert taken == 5.0
    assert store.update_bucket("openai/m:requests", 5.0, lambda level, updated: (level, updated, (level, updated))) == (4.0, 1.0)


def test_the_sqlite_store_under_one_machine(tmp_path):
    exercise(LMStore(f"sqlite:///{tmp_path / 'nested' / 'lm-state.sqlite'}"))


@pytest.mark.e2e
def test_the_postgresql_store_a_deployment_shares():
    from teleprompt_assets_tests.servers import postgres

    with postgres() as server:
        store = LMStore(server.url("mlflow"))
        exercise(store)
        assert store.answers() == 1
        store.engine.dispose()
