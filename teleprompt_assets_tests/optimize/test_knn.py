import random

import dspy
import pytest

from teleprompt_assets.core.config import OptimizerConfig
from teleprompt_assets.core.lm import offline_lm
from teleprompt_assets.core.optimizers import MAX_K, validate_optimizer
from teleprompt_assets.core.spec import ProgramSpec, load_project
from teleprompt_assets.evaluate import deltaone, scoring
from teleprompt_assets.optimize import knn
from teleprompt_assets.optimize.prompt_quality import check_program
from teleprompt_assets.optimize.teleprompters import compile_program, load_state, program_state
from teleprompt_assets.samples import ticket_traffic
from teleprompt_assets_tests.optimize.test_teleprompters import _examples

SAMPLE = load_project("teleprompt.yaml")[1]["ticket_router"]
SPEC = ProgramSpec("ticket_router", SAMPLE.config.model_copy(update={"optimizer": OptimizerConfig(
    name="BootstrapFewShot", params={"max_bootstrapped_demos": 4, "max_labeled_demos": 24})}))  # what these tests compile with


def _spec(name: str, **params) -> ProgramSpec:
    config = OptimizerConfig(name=name, params=params)
    validate_optimizer(config)
    return ProgramSpec("ticket_router", SPEC.config.model_copy(update={"optimizer": config}))


def _tickets(n: int, seed: int) -> list[dspy.Example]:
    """Distinct synthetic tickets with their true queue (the demo's traffic, without label noise)."""
    seen: dict[str, str] = {}
    for ticket in ticket_traffic.tickets(4 * n, random.Random(seed)):
        seen.setdefault(ticket.message, ticket.true_queue)
    return [dspy.Example(message=m, queue=q, trace_id=f"s{seed}-{i}", trace_hash=f"0x{seed:02x}{i:062x}", contributor="0x" + "b" * 40).with_inputs("message")
            for i, (m, q) in enumerate(list(seen.items())[:n])]


@pytest.fixture(scope="module")
def window():
    """60 training and 38 held-out tickets, no message in both (the traffic has few distinct messages)."""
    train = _tickets(60, 1)
    holdout = [ex for ex in _tickets(200, 2) if ex.message not in {t.message for t in train}][:40]
    return train, holdout


@pytest.mark.parametrize(("params", "warm_start", "message"), [
    ({"k": 0}, False, "params.k: Input should be greater than or equal to 1"),
    ({"k": MAX_K + 1}, False, f"params.k: Input should be less than or equal to {MAX_K}"),
    ({"k": "3"}, False, "params.k: Input should be a valid integer"),
    ({"k": 8, "max_pool": 5}, False, "params.k: 8 demos per call from a pool of at most max_pool=5"),
    ({"max_bootstrapped_demos": 2}, False, "params.max_bootstrapped_demos: must be 0"),
    ({"max_labeled_demos": 16}, False, "params.max_labeled_demos: a BootstrapFewShot argument"),
    ({"trainset": []}, False, "params.trainset: set by the pipeline"),
    ({"embedder": "openai/text-embedding-3-small", "dimensions": 256}, False, "dimensions, ngrams: only for the hashing embedder"),
    ({"dimensions": 8}, False, "params.dimensions: Input should be greater than or equal to 64"),
    ({"neighbours": 3}, False, "params.neighbours: not a parameter of KNNFewShot"),
    ({"k": 3}, True, "warm_start: KNNFewShot shows labeled training examples and runs no teacher"),
])
def test_invalid_knn_configs_fail_up_front(params, warm_start, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        validate_optimizer(OptimizerConfig(name="KNNFewShot", params=params, warm_start=warm_start))


def test_a_hosted_embedder_is_accepted_by_name():
    validate_optimizer(OptimizerConfig(name="KNNFewShot", params={"k": 4, "embedder": "openai/text-embedding-3-small"}))


def test_knn_beats_the_uncompiled_program_and_same_size_labeled_demos_on_the_holdout(window):
    """The offline LM answers from the most similar demo it is shown: the 3 nearest beat 3 random ones."""
    train, holdout = window
    metric = SPEC.metric()
    scores = {}
    with dspy.context(lm=offline_lm()):
        for name, params in (("KNNFewShot", {"k": 3}), ("LabeledFewShot", {"k": 3})):
            spec = _spec(name, **params)
            result = compile_program(spec, train, metric)
            candidate = load_state(spec, result.state)  # what evaluation and registration use
            scored = scoring.score_pair(SPEC.build(), candidate, holdout, metric, offline_lm(), "queue")
            scores[name] = deltaone.compare(scored)
    knn_result, labeled = scores["KNNFewShot"], scores["LabeledFewShot"]
    assert knn_result.deltaone and knn_result.significant, knn_result
    assert knn_result.candidate_sum > labeled.candidate_sum, (knn_result, labeled)
    assert knn_result.candidate_mean >= 0.9


def test_provenance_is_the_candidate_pool(window):
    train, _ = window
    spec = _spec("KNNFewShot", k=2, max_pool=50)
    result = compile_program(spec, train + train[:5], spec.metric())  # repeated inputs enter the pool once
    pool = result.state[knn.STATE_KEY]["pool"]
    assert result.demos == [] and result.state["route"]["demos"] == []
    assert result.pool == [row["trace_id"] for row in pool] and len(pool) == 50
    # past max_pool the smallest trace hashes stay, in training order
    assert result.pool == [ex.trace_id for ex in sorted(train, key=lambda ex: ex.trace_hash)[:50]]
    assert all(row["trace_hash"] and row["contributor"] for row in pool)
    assert result.state[knn.STATE_KEY]["embedder"] == {"name": "hashing", "version": 1, "dimensions": 1024, "ngrams": 2}
    nearest = result.program.nearest(message=train[7].message)
    assert nearest[0].trace_id == train[7].trace_id and len(nearest) == 2


def test_prompt_quality_checks_the_pool_and_the_widest_call(window):
    train, holdout = window
    spec = _spec("KNNFewShot", k=4)
    program = compile_program(spec, train, spec.metric()).program
    allowed = {ex.trace_id for ex in train}
    report = check_program(program, allowed, {ex.trace_id for ex in holdout}, 4000)
    assert report.passed, report.problems
    assert report.prompt_tokens["route"] > check_program(SPEC.build(), allowed, set(), 4000).prompt_tokens["route"]
    program.pool = [*program.pool, holdout[0].copy(queue="")]
    problems = check_program(program, allowed, {holdout[0].trace_id}, 50).problems
    assert "route.pool[60]: missing queue" in problems
    assert f"route.pool[60]: drawn from held-out trace {holdout[0].trace_id}" in problems
    assert any("over the budget of 50" in p for p in problems)


def test_state_round_trips_and_a_knn_program_can_teach():
    examples = _examples()
    spec = _spec("KNNFewShot", k=2)
    program = compile_program(spec, examples, spec.metric()).program
    state = program_state(program)
    reloaded = load_state(spec, state)
    assert program_state(reloaded) == state
    with dspy.context(lm=offline_lm()):
        assert reloaded(message="my parcel has not arrived").queue == "shipping"
        # the champion as teacher (warm start of another optimizer): its calls are traced under its own predictors
        taught = compile_program(SPEC, examples[:3], SPEC.metric(), teacher=reloaded)
    assert [d.augmented for d in taught.demos][:3] == [True, True, True]


def test_each_predictor_is_shown_its_neighbours_distinct_on_what_it_sees():
    """``classify`` sees only the email: two customers who sent the same email are one demo for it."""
    from teleprompt_assets.core.config import ProgramConfig
    from teleprompt_assets_tests.optimize.test_teleprompters import _two_step_examples

    spec = ProgramSpec("triage", ProgramConfig(module="teleprompt_assets_tests.user_programs.support_desk:TriageAndDraft",
                                               metric={"kind": "token_f1", "field": "reply"}, optimizer=OptimizerConfig(name="KNNFewShot", params={"k": 2})))
    program = compile_program(spec, _two_step_examples(), spec.metric()).program
    lm = offline_lm()
    with dspy.context(lm=lm):
        program(email="How do I cancel my account?", customer_name="Ada Lovelace")
    classify_prompt, draft_prompt = (str(h["messages"]) for h in lm.history)
    assert classify_prompt.count("How do I cancel my account?") == 2  # one demo and the query
    assert draft_prompt.count("How do I cancel my account?") == 3  # both customers' demos and the query
