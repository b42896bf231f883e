import dspy

from teleprompt_assets.core.lm import offline_lm
from teleprompt_assets.core.spec import load_project
from teleprompt_assets.reward.impact import demo_impact

SPEC = load_project("teleprompt.yaml")[1]["ticket_router"]


def _example(message: str, queue: str) -> dspy.Example:
    return dspy.Example(message=message, queue=queue).with_inputs("message")


def test_leave_one_out_credits_only_the_demo_that_helps():
    program = SPEC.build()
    program.route.demos = [_example("parcel lost in transit", "shipping"), _example("weather is nice today", "sales")]
    holdout = [_example("my parcel was lost in transit", "shipping"), _example("parcel lost again in transit", "shipping")]
    measured = demo_impact(program, holdout, SPEC.metric(), offline_lm(), budget=1_000)
    assert measured.credits == [("route", 0, 2_000_000), ("route", 1, 0)]
    assert (measured.examples_used, measured.lm_calls) == (2, 6)


def test_budget_limits_the_examples_used():
    program = SPEC.build()
    program.route.demos = [_example("parcel lost in transit", "shipping")]
    holdout = [_example("parcel lost in transit", "shipping")] * 10
    measured = demo_impact(program, holdout, SPEC.metric(), offline_lm(), budget=7)
    assert measured.examples_used == 3 and measured.lm_calls == 6 and measured.credits == [("route", 0, 3_000_000)]
