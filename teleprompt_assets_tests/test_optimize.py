import time

import dspy
import pytest

from teleprompt_assets.lm import offline_lm
from teleprompt_assets.optimize import CompileTimeout, compile_program, time_limit, validate_optimizer
from teleprompt_assets.programs import OptimizerConfig, load_project
from teleprompt_assets.usage import CostModel, metered

SPEC = load_project("teleprompt.yaml")[1]["ticket_router"]
MESSAGES = [("my parcel never arrived", "shipping"), ("the app crashes on start", "technical"), ("refund my last invoice", "billing"),
            ("reset my password please", "account"), ("quote for 40 seats", "sales"), ("where is my package", "shipping")]


def _examples():
    return [dspy.Example(message=m, queue=q, trace_id=f"t{i}", trace_hash=f"0x{i:064x}", contributor="0x" + "a" * 40).with_inputs("message")
            for i, (m, q) in enumerate(MESSAGES)]


@pytest.mark.parametrize(("config", "message"), [
    (OptimizerConfig(name="COPRO", params={"breadth": 1}), "breadth > 1"),
    (OptimizerConfig(name="GEPA"), "reflection_lm"),
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
    from teleprompt_assets.programs import ProgramSpec

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
    from teleprompt_assets.programs import ProgramSpec

    config = OptimizerConfig(name="MIPROv2", params={"auto": "light", "max_bootstrapped_demos": 2, "max_labeled_demos": 2, "num_threads": 1})
    validate_optimizer(config)
    spec = ProgramSpec("ticket_router", SPEC.config.model_copy(update={"optimizer": config}))
    examples = _examples() * 4
    with dspy.context(lm=offline_lm()):
        result = compile_program(spec, examples, spec.metric(), examples[:6])
    assert result.demos and all(d.trace_id for d in result.demos)
