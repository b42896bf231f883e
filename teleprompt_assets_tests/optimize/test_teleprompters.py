import time

import dspy
import pytest

from teleprompt_assets.core.config import OptimizerConfig
from teleprompt_assets.core.lm import offline_lm
from teleprompt_assets.core.optimizers import validate_optimizer
from teleprompt_assets.core.spec import ProgramSpec, load_project
from teleprompt_assets.core.usage import CostModel, metered
from teleprompt_assets.optimize import teleprompters
from teleprompt_assets.optimize.teleprompters import CompileTimeout, compile_program, time_limit

SAMPLE = load_project("teleprompt.yaml")[1]["ticket_router"]
SPEC = ProgramSpec("ticket_router", SAMPLE.config.model_copy(update={"optimizer": OptimizerConfig(
    name="BootstrapFewShot", params={"max_bootstrapped_demos": 4, "max_labeled_demos": 24})}))  # what these tests compile with
MESSAGES = [("my parcel never arrived", "shipping"), ("the app crashes on start", "technical"), ("refund my last invoice", "billing"),
            ("reset my password please", "account"), ("quote for 40 seats", "sales"), ("where is my package", "shipping")]


def _examples():
    return [dspy.Example(message=m, queue=q, trace_id=f"t{i}", trace_hash=f"0x{i:064x}", contributor="0x" + "a" * 40).with_inputs("message")
            for i, (m, q) in enumerate(MESSAGES)]


@pytest.mark.parametrize(("config", "message"), [
    (OptimizerConfig(name="COPRO", params={"breadth": 1}), "breadth > 1"),
    (OptimizerConfig(name="GEPA"), "GEPA needs exactly one budget of auto, max_metric_calls, max_full_evals \\(got none\\)"),
    (OptimizerConfig(name="GEPA", params={"auto": "light", "max_metric_calls": 10}), "exactly one budget"),
    (OptimizerConfig(name="GEPA", params={"max_metric_calls": 10}, warm_start=True), "warm_start: GEPA takes no teacher"),
    (OptimizerConfig(name="MIPROv2", params={"num_trials": 3}), "params.num_trials: MIPROv2 derives it from auto='light'"),
    (OptimizerConfig(name="MIPROv2", params={"auto": None, "num_candidates": 3}), "needs both num_candidates and num_trials"),
    (OptimizerConfig(name="GEPA", params={"max_metric_calls": 10, "reflection_lm": "openai/gpt-4o"}), "set optimizer.reflection_lm"),
    (OptimizerConfig(name="COPRO", params={"prompt_model": "openai/gpt-4o"}), "params.prompt_model: takes an LM object"),
    (OptimizerConfig(name="BootstrapFewShot", params={"max_rounds": True}), "non-negative integer"),
    (OptimizerConfig(name="BootstrapFewShotWithRandomSearch", params={"num_threads": 1000}), "at most 64"),
    (OptimizerConfig(name="SIMBA"), "unknown optimizer"),
])
def test_invalid_optimizer_configs_fail_up_front(config, message):
    with pytest.raises(ValueError, match=message):
        validate_optimizer(config)


def test_bootstrapped_and_labeled_demos_carry_their_trace():
    with dspy.context(lm=offline_lm()):
        result = compile_program(SPEC, _examples(), SPEC.metric())
    assert result.demos and all(d.trace_id for d in result.demos)
    assert {d["trace_id"] for d in result.state["route"]["demos"]} <= {f"t{i}" for i in range(len(MESSAGES))}


def test_warm_start_uses_the_teacher():
    teacher = SPEC.build()
    teacher.route.demos = [dspy.Example(message="my parcel never arrived", queue="shipping")]
    spec = SPEC.model_copy() if hasattr(SPEC, "model_copy") else SPEC
    with dspy.context(lm=offline_lm()):
        cold = compile_program(spec, _examples()[:1], spec.metric())
        warm = compile_program(spec, _examples()[:1], spec.metric(), teacher=teacher)
    assert [d.augmented for d in warm.demos] == [True]  # the teacher answered it, so it was bootstrapped
    assert cold.demos


def test_copro_compiles_with_the_offline_lm():
    from teleprompt_assets.core.spec import ProgramSpec

    spec = ProgramSpec("ticket_router", SPEC.config.model_copy(update={"optimizer": OptimizerConfig(name="COPRO", params={"breadth": 2, "depth": 1})}))
    validate_optimizer(spec.config.optimizer)
    with dspy.context(lm=offline_lm()):
        result = compile_program(spec, _examples(), spec.metric())
    assert result.state["route"]["signature"]["instructions"]


def test_time_limit_interrupts():
    with pytest.raises(CompileTimeout, match="time limit of 1 s"):
        with time_limit(1):
            time.sleep(3)


def test_usage_is_metered_and_projected():
    lm = offline_lm()
    with metered(lm) as usage, dspy.context(lm=lm):
        compile_program(SPEC, _examples(), SPEC.metric())
    assert usage.calls > 0 and usage.input_tokens > usage.output_tokens > 0
    cost = CostModel(latency_s=2, usd_per_1m_input_tokens=1, usd_per_1m_output_tokens=0, parallel_calls=2)
    assert usage.projected_wall_s(cost) == usage.calls
    assert usage.projected_usd(cost) == usage.input_tokens / 1e6


def test_miprov2_compiles_with_the_offline_lm():
    from teleprompt_assets.core.spec import ProgramSpec

    config = OptimizerConfig(name="MIPROv2", params={"auto": "light", "max_bootstrapped_demos": 2, "max_labeled_demos": 2, "num_threads": 1})
    validate_optimizer(config)
    spec = ProgramSpec("ticket_router", SPEC.config.model_copy(update={"optimizer": config}))
    examples = _examples() * 4
    with dspy.context(lm=offline_lm()):
        result = compile_program(spec, examples, spec.metric(), examples[:6])
    assert result.demos and all(d.trace_id for d in result.demos)


def test_gepa_compiles_offline_with_the_metrics_feedback_and_no_reflection_lm_configured():
    """GEPA needs a five-argument metric and a reflection LM that answers its proposer in JSON: the
    metric is adapted, and the reflection LM defaults to the LM the compile runs with."""
    from teleprompt_assets.core.spec import ProgramSpec

    config = OptimizerConfig(name="GEPA", params={"max_metric_calls": 16, "reflection_minibatch_size": 2, "num_threads": 1})
    validate_optimizer(config)
    spec = ProgramSpec("ticket_router", SPEC.config.model_copy(update={"optimizer": config}))
    metric = SPEC.metric()
    metric.feedback = lambda example, prediction: f"Expected queue {example.queue}, got {prediction.queue}."
    lm = offline_lm()
    with dspy.context(lm=lm):
        result = compile_program(spec, _examples(), metric, _examples()[:3])
    assert result.state["route"]["signature"]["instructions"]
    proposals = [h for h in lm.history if "examples_with_feedback" in str(h["messages"])]
    assert proposals and "Expected queue" in str(proposals[0]["messages"])
    assert proposals[0]["outputs"][0].startswith("{")  # the JSON GEPA's proposer asks for


def test_gepa_metric_takes_five_arguments_and_passes_feedback_on():
    from teleprompt_assets.optimize.teleprompters import gepa_metric

    example, prediction = _examples()[0], dspy.Prediction(queue="billing")
    plain = gepa_metric(SPEC.metric())
    assert plain(example, prediction, None, "route", None) == 0.0
    explained = SPEC.metric()
    explained.feedback = lambda ex, pred: f"expected {ex.queue}"
    assert gepa_metric(explained)(example, prediction, None, None, None) == dspy.Prediction(score=0.0, feedback="expected shipping")

    def own(example, prediction, trace=None):
        return dspy.Prediction(score=0.5, feedback="too long")

    assert gepa_metric(own)(example, prediction, None, "route", None).feedback == "too long"


def test_a_teleprompter_that_cannot_be_built_is_a_deterministic_compile_error(monkeypatch):
    from teleprompt_assets.optimize import teleprompters

    class Refuses:
        def __init__(self, **params):
            raise TypeError("metric must accept five arguments")

    monkeypatch.setitem(teleprompters.OPTIMIZERS, "BootstrapFewShot", Refuses)
    with pytest.raises(teleprompters.CompileError, match="BootstrapFewShot could not compile 'ticket_router'.*TypeError: metric must accept five") as caught:
        compile_program(SPEC, _examples(), SPEC.metric())
    assert caught.value.transient is False


TWO_STEP = "teleprompt_assets_tests.user_programs.support_desk:TriageAndDraft"
EMAILS = [("My parcel has not arrived yet, where is it?", "shipping"), ("Please refund my subscription fee for this month.", "refund"),
          ("How do I cancel my account?", "cancel")]


def _two_step_spec(name: str = "BootstrapFewShot", **params):
    from teleprompt_assets.core.config import ProgramConfig
    from teleprompt_assets.core.spec import ProgramSpec

    return ProgramSpec("triage", ProgramConfig(module=TWO_STEP, metric={"kind": "token_f1", "field": "reply"},
                                               optimizer=OptimizerConfig(name=name, params=params)))


def _two_step_examples(with_trace_ids: bool = True) -> list[dspy.Example]:
    """Each email from two customers: one example each for the program, one input for ``classify``."""
    rows = [(email, intent, name) for email, intent in EMAILS for name in ("Ada Lovelace", "Grace Hopper")]
    return [dspy.Example(email=email, customer_name=name, intent=intent, reply=f"Hi {name}, about your {intent}: done.",
                         **({"trace_id": f"t{i}", "trace_hash": f"0x{i:064x}", "contributor": "0x" + "c" * 40} if with_trace_ids else {}))
            .with_inputs("email", "customer_name") for i, (email, intent, name) in enumerate(rows)]


def test_bootstrapped_demos_of_every_step_are_credited_to_the_example_they_ran_on():
    """``draft``'s demos hold ``intent``, which no training example has as an input, and ``classify``'s
    hold only the email: each is credited to the example its bootstrap run was on, never by likeness."""
    from teleprompt_assets.optimize.prompt_quality import check_program

    trainset = _two_step_examples()
    spec = _two_step_spec(max_bootstrapped_demos=6, max_labeled_demos=0)
    with dspy.context(lm=offline_lm()):
        result = compile_program(spec, trainset, lambda example, prediction, trace=None: 1.0)
    by_id = {ex.trace_id: ex for ex in trainset}
    classify, draft = result.program.classify.demos, result.program.draft.predict.demos
    assert len(draft) == 6 and all(d.augmented for d in draft)
    for demo in draft:
        source = by_id[demo.trace_id]
        assert (demo.email, demo.customer_name) == (source.email, source.customer_name) and demo.trace_hash == source.trace_hash
    # classify saw three distinct emails: the second customer's identical input is dropped, not credited twice
    assert [d.email for d in classify] == [email for email, _ in EMAILS]
    assert [d.trace_id for d in classify] == ["t0", "t2", "t4"]
    assert check_program(result.program, set(by_id), set(), 4000).passed


def test_demos_of_examples_without_a_trace_stay_unproven():
    from teleprompt_assets.optimize.prompt_quality import check_program

    spec = _two_step_spec(max_bootstrapped_demos=2, max_labeled_demos=0)
    with dspy.context(lm=offline_lm()):
        result = compile_program(spec, _two_step_examples(with_trace_ids=False), lambda example, prediction, trace=None: 1.0)
    assert result.demos and all(d.trace_id is None for d in result.demos)
    problems = check_program(result.program, {"t0"}, set(), 4000).problems
    assert "classify.demos[0]: no source trace (cannot prove it came from accepted training data)" in problems


def test_labeled_demos_are_distinct_per_predictor_on_what_it_sees():
    spec = _two_step_spec("LabeledFewShot", k=6)
    result = compile_program(spec, _two_step_examples(), spec.metric())
    assert len({d.email for d in result.program.classify.demos}) == len(result.program.classify.demos) == 3
    assert len(result.program.draft.predict.demos) == 6


def test_miprov2_with_an_explicit_budget_compiles_on_a_small_window():
    """``auto: null`` with num_candidates and num_trials: a validation set smaller than MIPROv2's
    minibatch is scored whole instead of refused."""
    config = OptimizerConfig(name="MIPROv2", params={"auto": None, "num_candidates": 2, "num_trials": 2, "num_threads": 1})
    validate_optimizer(config)
    spec = _two_step_spec("MIPROv2", **config.params)
    with dspy.context(lm=offline_lm()):
        result = compile_program(spec, _two_step_examples(), spec.metric(), _two_step_examples()[:2])
    assert all(d.trace_id for d in result.demos)


def _final_only(name: str, **params):
    from teleprompt_assets.core.config import ProgramConfig
    from teleprompt_assets.core.spec import ProgramSpec

    return ProgramSpec("triage", ProgramConfig(module=TWO_STEP.replace("TriageAndDraft", "TriageAndDraftFinalOnly"),
                                               metric={"kind": "token_f1", "field": "reply"}, optimizer=OptimizerConfig(name=name, params=params)))


def _without_intent() -> list[dspy.Example]:
    return [dspy.Example({k: v for k, v in ex.items() if k != "intent"}).with_inputs("email", "customer_name") for ex in _two_step_examples()]


def test_labeled_demos_missing_a_field_their_step_needs_are_left_out():
    """Traces that log only the last step's output hold no ``intent``: bootstrapped demos (which carry
    the intent classify produced) are kept, labeled ones that cannot show it are not."""
    from teleprompt_assets.optimize.prompt_quality import check_program

    spec = _final_only("BootstrapFewShot", max_bootstrapped_demos=2, max_labeled_demos=4)
    with dspy.context(lm=offline_lm()):
        result = compile_program(spec, _without_intent(), lambda example, prediction, trace=None: 1.0)
    assert result.demos and all(d.augmented for d in result.demos)
    assert check_program(result.program, {f"t{i}" for i in range(6)}, set(), 4000).passed


@pytest.mark.parametrize(("name", "params"), [("LabeledFewShot", {"k": 4}), ("KNNFewShot", {"k": 2})])
def test_labeled_optimizers_refuse_traces_that_lack_a_steps_field_with_the_reason(name, params):
    from teleprompt_assets.optimize.teleprompters import CompileError

    spec = _final_only(name, **params)
    with pytest.raises(CompileError, match="no training example holds every field .*classify.*intent") as caught:
        compile_program(spec, _without_intent(), spec.metric())
    assert not caught.value.transient and "log each step's output" in str(caught.value)


def test_labeled_few_shot_with_k_zero_compiles_a_program_without_demos():
    """k=0 asks for no demos (the suite's regressing optimizer); it is not the missing-field failure."""
    spec = _two_step_spec("LabeledFewShot", k=0)
    trainset = [dspy.Example(email="a", customer_name="b", intent="refund", reply="c", trace_id=f"t{i}").with_inputs("email", "customer_name")
                for i in range(3)]
    result = compile_program(spec, trainset, lambda *a: 1.0)
    assert result.demos == []


def test_optimizers_log_their_trials_to_the_caller_not_the_terminal(capfd):
    """MIPROv2 logs ~200 INFO lines a compile through DSPy's own stderr handler; a CLI run showed them all."""
    import logging

    before = [logging.getLogger(name).handlers[:] for name in teleprompters.TRIAL_LOGGERS]
    with teleprompters.trial_log() as lines:
        logging.getLogger("dspy.teleprompt.mipro_optimizer_v2").info("Trial 3 / 4: score 80.0")
        logging.getLogger("optuna").info("A new study created")
    assert lines == ["INFO dspy.teleprompt.mipro_optimizer_v2: Trial 3 / 4: score 80.0", "INFO optuna: A new study created"]
    assert "Trial 3" not in capfd.readouterr().err
    assert [logging.getLogger(name).handlers for name in teleprompters.TRIAL_LOGGERS] == before


def test_a_predictor_short_of_demos_for_want_of_logged_fields_says_so():
    """Traces of a program that returns only its last step never log ``intent``: its labeled examples
    cannot be demos, and a run gave 2 demos of the 20 allowed without a word."""
    from teleprompt_assets.core.config import ProgramConfig
    from teleprompt_assets.core.spec import ProgramSpec

    trainset = [ex.copy(intent=None) for ex in _two_step_examples()]  # what a final-only program's traces hold
    spec = ProgramSpec("triage", ProgramConfig(module=TWO_STEP.replace("TriageAndDraft", "TriageAndDraftFinalOnly"), metric={"kind": "token_f1", "field": "reply"},
                                               optimizer=OptimizerConfig(name="BootstrapFewShot", params={"max_bootstrapped_demos": 1, "max_labeled_demos": 4})))
    with dspy.context(lm=offline_lm()):
        result = compile_program(spec, trainset, lambda example, prediction, trace=None: 1.0)
    coverage = {c.predictor: c for c in result.coverage}
    assert set(coverage) == {"classify", "draft.predict"}
    classify = coverage["classify"]
    assert (classify.limit, classify.complete, classify.examples, classify.missing) == (5, 0, 6, ("intent",)) and classify.demos < 5
    assert classify.shortfall().startswith(f"classify: {classify.demos} of 5 demos; 6 of 6 training examples lack intent (log what the program computes in forward")
    with dspy.context(lm=offline_lm()):  # the same program returning both steps' outputs: nothing missing, nothing to say
        logged = compile_program(_two_step_spec(max_bootstrapped_demos=1, max_labeled_demos=4), _two_step_examples(), lambda example, prediction, trace=None: 1.0)
    assert all(c.missing == () and c.shortfall() is None for c in logged.coverage)
